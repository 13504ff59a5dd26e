"""``medverse-lab train``: topology-aware training from the command line (``torchrun -m
medverse_lab.cli train`` for several processes)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch

from ..modes import MODES
from ..training import distributed
from ..training.trainer import TrainConfig, train


def config_from_args(args) -> TrainConfig:
    """A :class:`TrainConfig` from parsed CLI arguments (same names)."""
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names and v is not None})


# ----- command line -------------------------------------------------------------------------
HELP = {
    "init": "a local causal-LM folder (config.json, *.safetensors, tokenizer) to fine-tune: the 12 MedVerse tags "
            "are added to its tokenizer and its embeddings resized; the size options are then ignored",
    "mode": f"mask and positions to train with: {', '.join(MODES)} (default dag)",
    "batch_size": "examples per micro-step over all processes (torchrun: each takes its share; default 8)",
}


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="checkpoint folder")
    parser.add_argument("--data", help="training JSONL (MedVerse records); default: synthesize with the Curator")
    parser.add_argument("--synthesize", type=int, default=20000, metavar="N",
                        help="without --data: synthesize N training records from the shipped knowledge graph")
    parser.add_argument("--eval-data", dest="eval_data")
    for f in fields(TrainConfig):
        if f.name in ("data", "out", "eval_data"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, dest=f.name, action="store_true", default=None)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(flag, dest=f.name, type=kind, default=None,
                                help=HELP.get(f.name, f"default {f.default}"), metavar=f.name.upper())


def main(args) -> int:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    job, joined = distributed.join(torch.device(device).type)  # under torchrun: one data file, written once
    try:
        if not args.data:
            data = Path(args.out).with_name(Path(args.out).name + "-data")
            seed = args.seed or 0
            if job.main:
                from ..data.curate import synthesize, write_jsonl

                data.mkdir(parents=True, exist_ok=True)
                write_jsonl(synthesize(args.synthesize, seed=seed, split="train"), data / "train.jsonl")
                print(f"synthesized {args.synthesize} training records (seed {seed}) into {data / 'train.jsonl'}")
            distributed.barrier(job)
            args.data = str(data / "train.jsonl")
        result = train(config_from_args(args))
    finally:
        distributed.leave(joined)
    if job.main:
        last = result["history"][-1]
        print(f"trained {len(result['history'])} steps in {result['seconds']:.0f} s on {result['examples']} examples "
              f"({result['skipped']} too long, skipped) with {result['processes']} process(es); final loss "
              f"{last['loss']}, eval loss {last.get('eval_loss')}; saved to {result['out']}")
    return 0
