"""``medverse-lab check FILE``: the problems of a curated dataset, summarised; exit 1 on errors."""

from __future__ import annotations

from ..data.check import check_records, problems_frame, summary, write_table


def add_arguments(parser) -> None:
    parser.add_argument("file", help="a .jsonl or .json file of MedVerse records")
    parser.add_argument("--out", help="also write the problems table (.csv, .parquet, .jsonl or .json)")
    parser.add_argument("--show", type=int, default=20, help="how many sample ids with errors to list (default 20)")


def main(args) -> int:
    rows, n = check_records(args.file)
    problems = problems_frame(rows)
    print(summary(problems, n, args.show))
    if args.out:
        print(f"wrote {problems.height} rows to {write_table(problems, args.out)}")
    return 1 if (problems["severity"] == "error").any() else 0
