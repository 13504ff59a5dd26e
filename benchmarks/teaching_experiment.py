"""The teaching experiment: does training with the topology keep answers when decoding in parallel?

Synthesizes Curator data, trains two models of the same size on the same data, one with
the `dag` topology (the shipped teaching model) and one with plain causal masks
(`sequential`), then decodes both in `dag` and in `sequential` mode on held-out synthetic
questions and prints the 2x2 table of accuracy and plan validity.

    python benchmarks/teaching_experiment.py --out runs            # everything (about 3.5 hours on 2 cores)
    python benchmarks/teaching_experiment.py --out runs --eval-only  # reuse trained models
    python benchmarks/teaching_experiment.py --out tiny --train-n 60 --steps 4,8 \
        --set hidden_size=32 num_layers=2 batch_size=2           # a smoke run in seconds
    python benchmarks/teaching_experiment.py --out runs --modes request --steps 600 \
        --set init=medverse_lab/assets/teaching-model lr=0.001 warmup=30 max_len=1024 \
        --eval-modes request,dag,sequential                      # the request model: fine-tuned from the shipped one

Training runs in stages (``--steps 1200,2400,3600``): a cosine schedule to the first figure,
then resumed runs, each with a fresh cosine schedule to the next, which is how the shipped
model was made. The shipped model is `runs/dag` without its trainer state (see the
model card).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import polars as pl

from medverse_lab.data.curate import synthesize, write_jsonl
from medverse_lab.engine import Engine
from medverse_lab.evaluation import evaluate
from medverse_lab.training.trainer import TrainConfig, train


def train_overrides(pairs: list[str]) -> dict:
    """``["hidden_size=32", "lr=0.01"]`` as TrainConfig keywords, typed like the defaults."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in fields or key in ("data", "out", "mode", "steps", "seed", "resume"):
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE with KEY a TrainConfig field other than "
                             "data, out, mode, steps, seed, resume")
        default = fields[key].default
        out[key] = value if default is None or isinstance(default, str) else type(default)(value)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs")
    ap.add_argument("--train-n", type=int, default=20000)
    ap.add_argument("--test-n", type=int, default=300)
    ap.add_argument("--steps", default="1200,2400,3600", help="optimizer steps at the end of each stage, comma-separated")
    ap.add_argument("--eval-n", type=int, default=200, help="held-out questions to decode per model and mode")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", default="dag,sequential", help="training modes, comma-separated")
    ap.add_argument("--eval-modes", default="dag,sequential", help="modes each model is decoded in, comma-separated")
    ap.add_argument("--batch-size", type=int, default=1,
                    help="questions decoded per forward call in the evaluation (the same runs, faster)")
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="TrainConfig fields for both models, e.g. hidden_size=128 lr=0.001")
    args = ap.parse_args(argv)
    overrides = train_overrides(args.set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_path, test_path = out / "train.jsonl", out / "test.jsonl"
    if not train_path.exists():
        write_jsonl(synthesize(args.train_n, seed=args.seed, split="train"), train_path)
        write_jsonl(synthesize(args.test_n, seed=args.seed + 1, split="test"), test_path)
    modes = args.modes.split(",")
    for mode in modes:
        if args.eval_only:
            continue
        for steps in (int(s) for s in args.steps.split(",")):
            started = (out / mode / "trainer_state.pt").exists()
            done = json.loads((out / mode / "history.json").read_text())[-1]["step"] if started else 0
            if done >= steps:
                continue
            t0 = time.perf_counter()
            result = train(TrainConfig(data=str(train_path), out=str(out / mode), mode=mode, steps=steps,
                                       seed=args.seed, resume=started, **overrides))
            print(f"trained {mode} to step {steps}: {time.perf_counter() - t0:.0f} s, final eval loss "
                  f"{result['history'][-1].get('eval_loss')}")
    eval_modes = tuple(args.eval_modes.split(","))
    tables = []
    for mode in modes:
        engine = Engine.load(out / mode)
        table, summary = evaluate(engine, test_path, modes=eval_modes, n=args.eval_n, batch_size=args.batch_size)
        table.write_csv(out / f"eval_{mode}.csv")
        tables.append(summary.with_columns(pl.lit(mode).alias("trained")))
        print(f"\ntrained with {mode}:\n{summary}")
    summary = pl.concat(tables, how="diagonal")
    print("\n| trained \\ decoded | " + " | ".join(f"{m} accuracy | {m} plan valid" for m in eval_modes) + " |")
    print("|---|" + "---:|---:|" * len(eval_modes))
    for mode in modes:
        cells = []
        for dec in eval_modes:
            r = summary.filter((pl.col("trained") == mode) & (pl.col("mode") == dec)).row(0, named=True)
            cells += [f"{r['accuracy']:.1%}", f"{r['plan_valid']:.1%}"]
        print(f"| {mode} | " + " | ".join(cells) + " |")
    (out / "summary.json").write_text(json.dumps(summary.to_dicts(), indent=1))


if __name__ == "__main__":
    main()
