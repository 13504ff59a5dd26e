"""``medverse-lab eval FILE``: an engine's accuracy and speed on multiple-choice questions, mode by mode."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ..evaluation import evaluate
from .engine_options import add_engine_arguments, load_engine


def add_arguments(parser) -> None:
    parser.add_argument("file", help="JSONL multiple-choice questions (options dict, key in answer_idx or answer)")
    add_engine_arguments(parser)
    parser.add_argument("--modes", help="comma-separated (default dag,sequential; request,sequential with "
                        "--backend vllm or remote)")
    parser.add_argument("-n", type=int, help="only the first N questions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the per-question table (.csv, .parquet or .jsonl)")
    parser.add_argument("--batch-size", type=int, default=8, help="questions decoded together (default 8)")


def main(args) -> int:
    from ..data.questions import load_questions
    from ..engine import check_engine_mode

    # everything that can be wrong with the arguments is found before the model loads
    suffix = Path(args.out).suffix if args.out else None
    writers = {".csv": "write_csv", ".parquet": "write_parquet", ".jsonl": "write_ndjson"}
    if args.out and suffix not in writers:
        raise ValueError(f"--out {args.out}: the table is written as .csv, .parquet or .jsonl")
    for mode in (args.modes or "").split(","):
        if mode:
            check_engine_mode(mode)
    questions = load_questions(args.file)
    engine = load_engine(args)
    modes = args.modes or ("dag,sequential" if engine.backend == "local" else "request,sequential")
    table, summary = evaluate(engine, questions, modes=tuple(modes.split(",")), n=args.n, seed=args.seed,
                              batch_size=args.batch_size)
    with pl.Config(tbl_cols=-1, tbl_width_chars=160):
        print(summary)
    if args.out:
        getattr(table, writers[suffix])(args.out)
        print(f"wrote {len(table)} rows to {args.out}")
    return 0
