"""``medverse-lab run "QUESTION"``: answer a question with the engine, printing the plan,
each step as it finishes, the answer, and the Phase II speedup over ``sequential``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .engine_options import add_engine_arguments, load_engine

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "question.txt"


def add_arguments(parser) -> None:
    parser.add_argument("question", nargs="?", help="the question text, options included ('A. ...' lines); "
                        "default: a shipped held-out synthetic question")
    add_engine_arguments(parser)
    parser.add_argument("--mode", help="dag, layered, speculative, sequential or request (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, help="0 is greedy (default: the model's generation config; "
                        "greedy for the teaching models)")
    parser.add_argument("--no-compare", action="store_true",
                        help="skip the sequential rerun that measures the speedup")


def has_options(question: str) -> bool:
    """Whether ``question`` lists options ``A.`` and ``B.`` (or ``A)``, ``B)``), on their own
    lines or inline."""
    return all(re.search(rf"(^|\s){x}[.)]\s", question) for x in "AB")


def main(args) -> int:
    from ..engine import PhaseStart, StepEnd, TokenEvent, check_engine_mode

    if args.mode is not None:
        check_engine_mode(args.mode)  # before the model loads
    example = args.question is None
    if example:
        args.question = EXAMPLE.read_text(encoding="utf-8").strip()
    elif not has_options(args.question):
        raise ValueError("the question lists no options ('A. ...', 'B. ...'): the model answers multiple-choice "
                         "questions with an option letter, so give it the options, one per line or inline")
    engine = load_engine(args)
    out = sys.stdout
    print(f"{engine}\n", file=out)
    if example:
        print(f"Question (a held-out synthetic example):\n{args.question}\n", file=out)
    stream = engine.stream(args.question, mode=args.mode, seed=args.seed, temperature=args.temperature)
    pieces: dict[str, list[str]] = {}
    for ev in stream:
        if isinstance(ev, TokenEvent):
            pieces.setdefault(ev.branch, []).append(ev.text)
        elif isinstance(ev, PhaseStart) and ev.phase == "steps":
            plan = written_plan("".join(pieces.get("prefix", ())))
            if plan is not None:
                print(f"Plan ({len(plan)} steps, width {plan.width}):", file=out)
                for s in plan.steps:
                    print(f"  {s.id}. {s.description}   <- {list(s.deps) or 'question'}", file=out)
                print(file=out)
        elif isinstance(ev, StepEnd):
            body = "".join(pieces[ev.branch]).split("\n", 1)[-1].rsplit("</Step>", 1)[0].strip()
            print(f"[{ev.time_s:6.2f}s] step {ev.branch} done: {body}", file=out, flush=True)
    run = stream.run
    if run.plan_error is not None:
        print(f"\nThe model's plan did not validate; decoded {run.plan_error.fallback} instead:\n{run.plan_error.error}",
              file=out)
    print(f"\nConclusion: {run.conclusion.strip()}", file=out)
    print(f"Answer: {run.answer or '(none)'}", file=out)
    for warning in run.warnings:
        print(f"Warning: {warning}", file=out)
    t = run.timings
    print(f"Mode {run.mode}: plan {t['plan']:.2f}s, steps {t['steps']:.2f}s, conclusion {t['conclusion']:.2f}s",
          file=out)
    if not args.no_compare and run.mode != "sequential":
        seq, par = phase2_seconds(engine, args.question, run.plan, ("sequential", run.mode), args.seed,
                                  args.temperature)
        print(f"Phase II speedup over sequential on the same plan: {seq / par:.2f}x "
              f"({seq:.2f}s -> {par:.2f}s, best of {REPEATS} runs each)", file=out)
    return 0


REPEATS = 2


def phase2_seconds(engine, question, plan, modes, seed, temperature) -> list[float]:
    """The best Phase II time of each mode over ``REPEATS`` interleaved runs of the same plan.

    The streamed run above is not the measure: it ran cold and printed as it went (on the
    teaching model its Phase II took 0.58-0.64 s where warm runs of the same plan took
    0.38-0.47 s, with or without streaming), which once showed a "speedup" of 0.89x.
    """
    best = [float("inf")] * len(modes)
    for _ in range(REPEATS):
        for i, mode in enumerate(modes):
            r = engine.run(question, mode=mode, plan=plan, seed=seed, temperature=temperature)
            best[i] = min(best[i], r.timings["steps"])
            r.release()
    return best


def written_plan(text: str):
    """The valid plan inside ``<Plan>...</Plan>`` of ``text``, else ``None`` (the run's
    ``plan_error`` then says why)."""
    from ..errors import PlanError
    from ..plan import Plan

    if "<Plan>" not in text or "</Plan>" not in text:
        return None
    try:
        return Plan.from_outline(text).validate()
    except PlanError:
        return None
