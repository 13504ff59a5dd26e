"""The cost of the `request` mode: local `request` against local `dag` and `sequential`.

    python benchmarks/bench_request.py [--repeats 3] [--step-tokens 64] [--device cpu]

In `request` mode each step is decoded as its own request (prefix + its ancestors' blocks +
its header), so a step with ancestors feeds their blocks again, in new cache slots: that is
the price of being exactly reproducible by a stock serving engine. Measured here in one run
on one model (the benchmark model of `bench_engine.py`: random Qwen2, ~5M parameters,
fixed step lengths), for three plans: 6 roots + a join, a chain of 4, a diamond (1; 2 and
3 on 1; 4 on 2 and 3). Per plan and mode: tokens re-encoded per run (repeated blocks, the
conclusion's included), Phase II time (median of ``--repeats``; first step token to last
step token), Phase II forward calls, and the cache slots the run holds. Printed as markdown.
"""

from __future__ import annotations

import statistics

import medverse_lab as ml
from bench_engine import QUESTION, build, machine, parser, plan_of

MODES = ("dag", "request", "sequential")


def chain(n: int = 4) -> ml.Plan:
    return ml.Plan([ml.Step(str(i), "finding -> implication", deps=[str(i - 1)] if i > 1 else [])
                    for i in range(1, n + 1)])


def diamond() -> ml.Plan:
    return ml.Plan([ml.Step("1", "finding -> implication"), ml.Step("2", "a -> b", deps=["1"]),
                    ml.Step("3", "a -> c", deps=["1"]), ml.Step("4", "b + c -> answer", deps=["2", "3"])])


def measure(engine, plan, mode, step_tokens, repeats):
    runs = [engine.run(QUESTION, mode=mode, plan=plan, temperature=0, max_step_tokens=step_tokens,
                       max_conclusion_tokens=8) for _ in range(repeats + 1)][1:]  # the first warms up
    run = runs[-1]
    df = run.tokens
    steps = df.filter(df["branch"].is_in(run.plan.ids))
    return {
        "repeated": int(df["repeat_of"].is_not_null().sum()),
        "phase2_s": statistics.median(r.timings["steps"] for r in runs),
        "calls": steps["forward_call"].n_unique(),
        "slots": run.layout.T,
    }


def main(argv=None) -> None:
    args = parser(__doc__.split("\n")[0], repeats=3).parse_args(argv)
    engine = build(args.device)
    print(f"Machine: {machine()}")
    print(f"Model: the bench_engine model on {engine.device}; step body {args.step_tokens} tokens (forced close); "
          f"median of {args.repeats} runs\n")
    print("| plan | mode | tokens re-encoded | Phase II s | Phase II calls | cache slots | time vs dag |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, plan in (("6 roots + join", plan_of(6)), ("chain of 4", chain()), ("diamond", diamond())):
        got = {m: measure(engine, plan, m, args.step_tokens, args.repeats) for m in MODES}
        for m in MODES:
            r = got[m]
            print(f"| {name} | `{m}` | {r['repeated']} | {r['phase2_s']:.3f} | {r['calls']} | {r['slots']} | "
                  f"{r['phase2_s'] / got['dag']['phase2_s']:.2f}x |")


if __name__ == "__main__":
    main()
