"""Throughput without giving up exactness: known tokens fed as one chunk, and many runs
decoded in one forward call (continuous batching), each run equal to the run alone."""

from __future__ import annotations

import pytest
import torch

import medverse_lab as ml
from medverse_lab.engine.decode import Batch, decode_many

from conftest import QUESTION as Q
from test_engine import assert_exact, recording

MODES = ("dag", "layered", "speculative", "sequential", "request")
KW = dict(max_step_tokens=5, max_conclusion_tokens=5)
QUESTIONS = [
    Q,
    "A 30-year-old woman has fever and a stiff neck. What is the diagnosis? A. meningitis B. migraine",
    "Troponin is raised. Next step? A. PCI B. discharge C. fluids D. wait",
    "A child has wheeze after exercise. Which drug? A. salbutamol B. aspirin",
    "An old man has a painless jaundice and weight loss. Most likely? A. gallstones B. pancreatic cancer C. hepatitis",
]


def calls_of(run, branch):
    return run.tokens.filter(run.tokens["branch"] == branch)["forward_call"].to_list()


# ----- known tokens as one chunk ----------------------------------------------------------------
def test_forced_tokens_share_one_forward_call(engine, plan):
    run = engine.run(Q, mode="dag", plan=plan, temperature=0, **KW)
    df = run.tokens
    prefix = calls_of(run, "prefix")
    assert set(prefix) == {0}  # prompt, the given plan and the <Execution> line: one forward
    for sid in plan.ids:
        rows = df.filter(df["branch"] == sid)
        header = rows.head(rows["forced"].arg_min())  # <Step> and the header line, up to the first sampled token
        assert len(header) > 3 and header["forward_call"].n_unique() == 1
        sampled = int((~rows["forced"]).sum())
        assert rows["forward_call"].n_unique() == 1 + sampled + 1  # header, each sampled token, </Step> + separator
        assert rows.tail(2)["forward_call"].n_unique() == 1
    assert_exact(engine, run)


@pytest.mark.parametrize("mode", MODES)
def test_a_rerun_with_forced_text_costs_one_call_for_the_text(engine, plan, mode):
    run = engine.run(Q, mode=mode, plan=plan, temperature=0, **KW)
    body = "A forced body of several words, fed in one forward call.\n"
    with recording(engine.model) as calls:
        new = engine.rerun(run, "3", text=body)
    assert new.steps["3"] == body
    forced = new.tokens.filter(new.tokens["branch"] == "3")
    assert forced["forced"].all() and forced["forward_call"].n_unique() == 1
    fed = sum(ids.shape[1] for ids, _ in calls)
    redo = set(new.rerun_event.dropped) | {"conclusion"}
    assert fed == sum(len(new.layout.segment(b)) for b in redo)
    assert len(calls) < fed / 2  # most re-decoded tokens were known and went in chunks
    assert_exact(engine, new)


# ----- many runs in one forward call ------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_run_many_equals_each_run_alone(engine, plan, mode):
    alone = [engine.run(q, mode=mode, plan=plan, temperature=0, **KW) for q in QUESTIONS]
    with recording(engine.model) as calls:
        batched = engine.run_many(QUESTIONS, mode=mode, plan=plan, temperature=0, batch_size=3, keep_cache=True,
                                  **KW)
    for a, b in zip(alone, batched):
        assert b.question == a.question and b.layout.token_ids == a.layout.token_ids
        assert b.tokens["position"].to_list() == a.tokens["position"].to_list()
        assert_exact(engine, b)  # logits of each token equal one teacher-forced forward of that run alone
    per_run = sum(a.tokens["forward_call"].max() + 1 for a in alone)
    assert len(calls) < per_run / 2  # five runs, three at a time: far fewer forward calls


def test_run_many_with_written_plans_and_sampling(engine):
    """Phase I (a plan the model writes; here it fails and falls back to sequential), prompts
    of different lengths joining mid-run, temperature sampling with a seed: still each run
    equals the run alone."""
    kw = dict(mode="dag", temperature=1.0, top_p=0.9, seed=7, max_plan_tokens=12, **KW)
    alone = [engine.run(q, **kw) for q in QUESTIONS]
    batched = engine.run_many(QUESTIONS, batch_size=2, **kw)
    assert [b.layout.token_ids for b in batched] == [a.layout.token_ids for a in alone]
    assert [b.mode for b in batched] == [a.mode for a in alone]
    assert all(b.cache_len == 0 for b in batched)  # keep_cache=False drops them
    with pytest.raises(ValueError, match="released"):
        engine.rerun(batched[0], "1")


def test_continuous_batching_admits_a_question_when_one_finishes(engine, plan):
    sizes = {}
    real = Batch.step

    def step(self):  # (a joining run's prompt is encoded in a batch of its own first)
        sizes.setdefault(id(self), []).append(len(self))
        return real(self)

    Batch.step = step
    try:
        make = lambda i: engine.decoder(QUESTIONS[i], mode="dag", plan=plan, temperature=0,
                                        max_step_tokens=3 + 4 * i, max_conclusion_tokens=2)
        order = [i for i, _ in decode_many(engine, make, len(QUESTIONS), batch_size=2)]
    finally:
        Batch.step = real
    sizes = max(sizes.values(), key=len)
    assert max(sizes) == 2
    assert order[0] == 0  # the shortest run leaves first ...
    assert sizes.count(2) > len(sizes) // 2  # ... and the batch stays full while questions wait


def test_run_many_refuses_bad_input_before_decoding(engine):
    with recording(engine.model) as calls:
        with pytest.raises(ValueError, match="question is empty"):
            engine.run_many([Q, "  "])
        with pytest.raises(ValueError, match="batch_size = 0"):
            engine.run_many([Q], batch_size=0)
        with pytest.raises(ValueError, match="unknown mode"):
            engine.run_many([Q], mode="fast")
    assert calls == []
    assert engine.run_many([]) == []


def test_decode_many_reports_a_bad_item_and_goes_on(engine, plan):
    def make(i):
        if i == 1:
            raise ValueError("bad record")
        return engine.decoder(QUESTIONS[i], plan=plan, temperature=0, **KW)

    out = dict(decode_many(engine, make, 3, batch_size=2))
    assert isinstance(out[1], ValueError) and isinstance(out[0], ml.Run) and isinstance(out[2], ml.Run)


def test_evaluate_in_batches_equals_one_by_one(engine):
    records = [{"question": f"Case {i}: a patient with finding {i}.", "options": {"A": "x", "B": "y"},
                "answer_idx": "AB"[i % 2]} for i in range(4)]
    kw = dict(modes=("dag", "sequential"), progress=False, max_plan_tokens=10, **KW)
    one, _ = ml.evaluate(engine, records, batch_size=1, **kw)
    many, summary = ml.evaluate(engine, records, batch_size=4, **kw)
    cols = ["question_id", "mode", "predicted", "plan_valid", "decoded_mode", "steps", "tokens", "forward_calls"]
    assert one.select(cols).equals(many.select(cols))
    assert summary["n"].to_list() == [4, 4]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here"))])
def test_batched_runs_equal_their_runs_alone_on_each_device(tokenizer, plan, device):
    from conftest import tiny_model

    engine = ml.Engine(tiny_model("qwen2", len(tokenizer)).to(device), tokenizer)
    assert engine.device.type == device
    alone = [engine.run(q, plan=plan, temperature=0, **KW) for q in QUESTIONS[:3]]
    batched = engine.run_many(QUESTIONS[:3], plan=plan, temperature=0, **KW)
    assert [b.layout.token_ids for b in batched] == [a.layout.token_ids for a in alone]


@pytest.mark.parametrize("mode", ["dag", "sequential"])
def test_token_by_token_feeding_gives_the_same_run_in_more_calls(tokenizer, plan, mode):
    from conftest import tiny_model

    engine = ml.Engine(tiny_model("qwen2", len(tokenizer)), tokenizer)
    chunked = engine.run(Q, mode=mode, plan=plan, temperature=0, **KW)
    engine.step_chunk = 1
    single = engine.run(Q, mode=mode, plan=plan, temperature=0, **KW)
    assert single.layout.token_ids == chunked.layout.token_ids
    assert single.tokens["position"].to_list() == chunked.tokens["position"].to_list()
    steps = lambda run: run.tokens.filter(run.tokens["branch"] != "prefix")["forward_call"].n_unique()
    headers = [len(engine.encode(f" {s.header()}\n")) for s in plan.steps]
    # each header token costs a call of its own (parallel steps' headers share calls)
    assert steps(single) - steps(chunked) >= (sum(headers) if mode == "sequential" else max(headers))
    assert_exact(engine, single)
