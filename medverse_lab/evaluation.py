"""Evaluation: run an engine over multiple-choice questions in several modes.

    table, summary = ml.evaluate(engine, "medqa_test.jsonl", modes=("dag", "sequential"), n=50)

``table`` has one row per (question, mode); ``summary`` one row per mode: accuracy, plan
validity, mean steps and width, tokens, and the Phase II time. When ``sequential`` is
among the modes, each other mode's Phase II speedup over it is in the summary too (same
questions, same model, same seed).
"""

from __future__ import annotations

import polars as pl
from tqdm.auto import tqdm

from .modes import ENGINE_MODES, Mode


SCHEMA = {
    "question_id": pl.String, "mode": pl.String, "answer": pl.String, "predicted": pl.String,
    "correct": pl.Boolean, "plan_valid": pl.Boolean, "decoded_mode": pl.String, "steps": pl.Int64,
    "width": pl.Int64, "tokens": pl.Int64, "forward_calls": pl.Int64, "time_plan": pl.Float64,
    "time_steps": pl.Float64, "time_conclusion": pl.Float64, "time_total": pl.Float64, "error": pl.String,
}


def _questions(questions, n):
    from .data.questions import load_questions

    qs = load_questions(questions) if isinstance(questions, (str, bytes)) or hasattr(questions, "__fspath__") \
        else [q if hasattr(q, "options") else load_questions([q])[0] for q in questions]
    return qs[:n] if n is not None else qs


def evaluate(engine, questions, modes=("dag", "sequential"), n: int | None = None, seed: int = 0,
             temperature: float = 0.0, progress: bool = True, batch_size: int = 1,
             **run_kwargs) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Run ``engine`` on ``questions`` (a JSONL path, records, or Question objects) in each
    of ``modes``; returns ``(table, summary)`` polars DataFrames.

    ``n`` takes the first n questions. Greedy by default (``temperature=0``); other keywords
    go to :meth:`Engine.run`. ``batch_size > 1`` decodes that many questions in one forward
    call (:meth:`Engine.run_many`): the same runs, faster. A question that raises is recorded
    with its error, not fatal.
    """
    from .data.questions import format_question
    from .engine.decode import positive_int, decode_many

    modes = tuple(engine.check_mode(m) for m in modes)
    if not modes:
        raise ValueError("modes is empty: name at least one of " + ", ".join(ENGINE_MODES))
    positive_int("batch_size", batch_size)
    qs = _questions(questions, n)
    if not qs:
        raise ValueError("no questions to evaluate")
    texts = [format_question(q) for q in qs]
    rows: dict[tuple[int, int], dict] = {}
    bar = tqdm(total=len(qs) * len(modes), desc="evaluate", disable=not progress, mininterval=1.0)
    for m, mode in enumerate(modes):
        make = lambda i: engine.decoder(texts[i], mode=mode, seed=seed, temperature=temperature, **run_kwargs)
        for i, run in decode_many(engine, make, len(qs), batch_size):
            rows[i, m] = _row(qs[i], mode, run)
            bar.update()
    bar.close()
    table = pl.DataFrame([rows[k] for k in sorted(rows)], schema=SCHEMA)
    return table, summarize(table)


def _row(q, mode: Mode, run) -> dict:
    """One table row: the run's answer and figures, or the error that stopped it."""
    row = {"question_id": str(q.id), "mode": mode, "answer": q.answer}
    if isinstance(run, Exception):
        return row | {"error": f"{type(run).__name__}: {run}"}
    return row | dict(
        predicted=run.answer, correct=run.answer is not None and run.answer == q.answer,
        plan_valid=run.plan_error is None, decoded_mode=run.mode, steps=len(run.plan),
        width=run.plan.width if len(run.plan) else 0, tokens=run.layout.base.T,
        forward_calls=int(run.tokens["forward_call"].max() or 0),
        time_plan=run.timings.get("plan", 0.0), time_steps=run.timings.get("steps", 0.0),
        time_conclusion=run.timings.get("conclusion", 0.0), time_total=run.timings.get("total", 0.0),
        error=None,
    )


def summarize(table: pl.DataFrame) -> pl.DataFrame:
    """One row per mode: ``n``, ``accuracy``, ``plan_valid``, ``fell_back`` (runs whose plan
    failed validation and were decoded ``sequential`` instead), mean steps/width/tokens,
    Phase II seconds, and (with ``sequential`` among the modes) ``phase2_speedup``: the
    ``sequential`` Phase II time over this mode's, summed over the questions this mode
    really decoded in parallel (``speedup_runs`` of them; a fallback is sequential decoding
    and says nothing about the mode's speed). ``None`` when no run of the mode qualifies."""
    ok = table.filter(pl.col("error").is_null()) if "error" in table.columns else table
    summary = ok.group_by("mode", maintain_order=True).agg(
        pl.len().alias("n"),
        pl.col("correct").mean().alias("accuracy"),
        pl.col("plan_valid").mean().alias("plan_valid"),
        (pl.col("decoded_mode") != pl.col("mode")).sum().alias("fell_back"),
        pl.col("steps").mean().alias("mean_steps"),
        pl.col("width").mean().alias("mean_width"),
        pl.col("tokens").mean().alias("mean_tokens"),
        pl.col("time_steps").sum().alias("steps_seconds"),
    )
    if "sequential" in summary["mode"].to_list():
        seq = ok.filter(pl.col("mode") == "sequential").select("question_id", pl.col("time_steps").alias("seq_s"))
        parallel = ok.filter(pl.col("decoded_mode") == pl.col("mode")).join(seq, on="question_id")
        speed = parallel.group_by("mode").agg((pl.col("seq_s").sum() / pl.col("time_steps").sum()).alias("phase2_speedup"),
                                              pl.len().alias("speedup_runs"))
        summary = summary.join(speed, on="mode", how="left", maintain_order="left")
    return summary
