"""Mask and position build times per mode for T = 1k, 4k and 8k tokens.

A 64-step random DAG (seeded) whose step lengths fill T; the prefix and conclusion take a
tenth of T each. Reports the median of 5 builds. As a reference point it also times the
obvious alternative for the `dag` mask at 1k tokens: a Python loop over token pairs.

    python benchmarks/bench_topology.py
"""

from __future__ import annotations

import platform
import random
import statistics
import time

import torch

import medverse_lab as ml


def random_plan(n_steps: int, seed: int = 0) -> ml.Plan:
    rng = random.Random(seed)
    steps = []
    for i in range(1, n_steps + 1):
        deps = sorted(rng.sample(range(max(1, i - 8), i), k=min(i - 1, rng.randint(0, 3)))) if i > 1 else []
        steps.append(ml.Step(i, f"finding {i} -> conclusion {i}", deps))
    return ml.Plan(steps)


def layout_of(T: int, plan: ml.Plan, seed: int = 0) -> ml.Layout:
    rng = random.Random(seed)
    prefix = conclusion = T // 10
    budget = T - prefix - conclusion
    weights = [rng.uniform(0.5, 1.5) for _ in plan.ids]
    lens = [max(2, int(budget * w / sum(weights))) for w in weights]
    lens[-1] += budget - sum(lens)
    return ml.Layout.from_plan(plan, prefix, dict(zip(plan.ids, lens)), conclusion, separator_lens=1)


def median_seconds(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def naive_dag_mask(layout: ml.Layout) -> torch.Tensor:
    branch = [layout.branch_of(i) for i in range(layout.T)]
    anc = {sid: layout.plan.ancestors(sid) for sid in layout.plan.ids}
    rows = []
    for q in range(layout.T):
        row = []
        for k in range(layout.T):
            bq, bk = branch[q], branch[k]
            ok = k <= q and (bk == "prefix" or bq == "conclusion" or bq == bk or bk in anc.get(bq, ()))
            row.append(ok)
        rows.append(row)
    return torch.tensor(rows)


def main():
    torch.set_num_threads(torch.get_num_threads())
    plan = random_plan(64)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; plan: 64 steps, width {plan.width}, {len(plan.chunks())} chunks")
    print(f"{'T':>6} {'mode':<13} {'mask ms':>9} {'positions ms':>13}")
    for T in (1024, 4096, 8192):
        layout = layout_of(T, plan)
        for mode in ml.MODES:
            m = median_seconds(lambda: ml.attention_mask(layout, mode))
            p = median_seconds(lambda: ml.position_ids(layout, mode))
            print(f"{T:>6} {mode:<13} {m * 1e3:>9.1f} {p * 1e3:>13.2f}")
    layout = layout_of(1024, plan)
    naive = median_seconds(lambda: naive_dag_mask(layout), repeat=1)
    ours = median_seconds(lambda: ml.attention_mask(layout, "dag"))
    assert torch.equal(naive_dag_mask(layout), ml.attention_mask(layout, "dag"))
    print(f"dag mask at T=1024: Python pair loop {naive * 1e3:.0f} ms vs ours {ours * 1e3:.1f} ms "
          f"({naive / ours:.0f}x)")


if __name__ == "__main__":
    main()
