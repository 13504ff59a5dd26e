"""Topology benchmarks: mask and position build times, dense vs block mask memory, and
the cost of a training batch.

- ``build``: mask and position build times per mode for T = 1k, 4k and 8k tokens. A 64-step
  random DAG (seeded) whose step lengths fill T; the prefix and conclusion take a tenth of T
  each. Median of 5 builds. As a reference point it also times the obvious alternative for
  the `dag` mask at 1k tokens: a Python loop over token pairs.
- ``memory``: the attention mask one example hands the model at T = 8k and 32k: the dense
  additive float32 ``[1, 1, T, T]`` (built at 8k, counted at 32k: 4 GiB) against the
  flex_attention block mask (:mod:`medverse_lab.training.block_mask`, 128-token tiles), with its share
  of tiles flex skips or computes without a mask.
- ``collate``: one training batch of 8 (the teaching model's tokenizer, Curator records):
  rebuilding every example's mask and positions at each step (what ``train`` did) against
  ``TopologyCollator`` on examples prepared once.

    python benchmarks/bench_topology.py              # all three
    python benchmarks/bench_topology.py memory collate
"""

from __future__ import annotations

import platform
import random
import statistics
import sys
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


def build_times():
    plan = random_plan(64)
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


def mask_memory():
    from medverse_lab.training.collator import TopologyExample, additive_mask, pad_examples, token_groups
    from medverse_lab.training.block_mask import block_mask, block_mask_bytes, check_flex

    check_flex()
    plan = random_plan(64)
    print(f"{'T':>6} {'mode':<12} {'dense float32':>14} {'block mask':>11} {'ratio':>7} {'block ms':>9} "
          f"{'tiles skipped':>14} {'tiles full':>11}")
    for T in (8192, 32768):
        layout = layout_of(T, plan)
        for mode in ml.ENGINE_MODES:
            groups, vis = token_groups(layout, mode)
            zeros = torch.zeros(layout.T, dtype=torch.long)
            batch = pad_examples([TopologyExample("bench", zeros, zeros, zeros, groups, vis)], 0)
            bm = block_mask(batch["groups"], batch["visibility"])
            ms = median_seconds(lambda: block_mask(batch["groups"], batch["visibility"]), repeat=3) * 1e3
            if T <= 8192:  # build it: 256 MiB; at 32k it would be 4 GiB, so count it
                dense = additive_mask(batch["groups"], batch["visibility"]).nbytes
            else:
                dense = T * T * torch.finfo(torch.float32).bits // 8
            n = bm.kv_num_blocks.shape[-1]
            causal_tiles = n * (n + 1) // 2
            computed = int(bm.kv_num_blocks.sum() + bm.full_kv_num_blocks.sum())
            blk = block_mask_bytes(bm)
            print(f"{T:>6} {mode:<12} {dense / 2**20:>10.0f} MiB {blk / 2**20:>7.2f} MiB {dense / blk:>6.0f}x "
                  f"{ms:>9.1f} {1 - computed / causal_tiles:>13.0%} {int(bm.full_kv_num_blocks.sum()) / causal_tiles:>10.0%}")
    print("tiles skipped / full: of the causal lower triangle of 128x128 tiles, those flex never computes, "
          "and those it computes without evaluating the mask")


def rebuilt_batch(layouts, mode, pad_id):
    """A batch as ``train.collate`` built it before the collator: every example's mask and
    positions rebuilt from its layout at every step."""
    L, B = max(lay.T for lay in layouts), len(layouts)
    allowed = torch.eye(L, dtype=torch.bool).repeat(B, 1, 1)
    pos = torch.zeros((B, L), dtype=torch.long)
    for b, lay in enumerate(layouts):
        allowed[b, :lay.T, :lay.T] = ml.attention_mask(lay, mode)
        pos[b, :lay.T] = ml.position_ids(lay, mode)
    return torch.zeros((B, 1, L, L)).masked_fill_(~allowed[:, None], torch.finfo(torch.float32).min), pos


def collate_times(repeat: int = 5):
    from pathlib import Path

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(Path(ml.__file__).parent / "assets" / "teaching-model")
    recs = ml.curate.synthesize(64, seed=0, split="train")
    print(f"{'mode':<13} {'rebuilt each step ms':>21} {'prepared once ms':>17} {'speedup':>8} {'prepare ms/example':>19}")
    for mode in ("dag", "medverse-sft"):
        collator = ml.TopologyCollator(tok, mode, max_len=512)
        t0 = time.perf_counter()
        examples = collator.prepare(recs, progress=False, warn=False)
        prep = (time.perf_counter() - t0) / len(recs)
        layouts = [ml.Layout.from_token_ids(e.input_ids, tok) for e in examples]
        batches = range(0, len(examples) - 7, 8)
        before = statistics.median(median_seconds(lambda: rebuilt_batch(layouts[i:i + 8], mode, 0), repeat)
                                   for i in batches)
        after = statistics.median(median_seconds(lambda: collator(examples[i:i + 8]), repeat) for i in batches)
        print(f"{mode:<13} {before * 1e3:>21.1f} {after * 1e3:>17.1f} {before / after:>7.1f}x {prep * 1e3:>19.1f}")
    mean_T = statistics.mean(len(e) for e in examples)
    print(f"batches of 8 from {len(examples)} Curator records (mean {mean_T:.0f} tokens), median over batches "
          f"of the median of {repeat}")


def main():
    torch.set_num_threads(torch.get_num_threads())
    plan = random_plan(64)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; plan: 64 steps, width {plan.width}, {len(plan.chunks())} chunks")
    parts = {"build": build_times, "memory": mask_memory, "collate": collate_times}
    asked = sys.argv[1:] or list(parts)
    unknown = [a for a in asked if a not in parts]
    if unknown:
        raise SystemExit(f"unknown part {unknown}: choose from {', '.join(parts)}")
    for name in asked:
        print(f"\n## {name}")
        parts[name]()


if __name__ == "__main__":
    main()
