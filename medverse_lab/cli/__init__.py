"""``medverse-lab``: the command line.

Each subcommand lives in its own module with ``add_arguments(parser)`` and
``main(args) -> int``; this file only dispatches, importing a module when it is used.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> (module, one-line help)
COMMANDS = {
    "run": ("medverse_lab.cli.run", "answer a question with the engine (embedded teaching model by default)"),
    "eval": ("medverse_lab.cli.evaluate", "evaluate an engine on a JSONL file of multiple-choice questions"),
    "inspect": ("medverse_lab.cli.inspect_trace", "show a trace's plan, Petri net, masks and positions"),
    "train": ("medverse_lab.cli.train", "topology-aware fine-tuning (reproduces the teaching model from a seed)"),
    "serve": ("medverse_lab.cli.serve", "serve the engine over HTTP (SGLang /generate and OpenAI-compatible endpoints)"),
    "check": ("medverse_lab.cli.check", "check a MedVerse dataset (tags, plans, steps, answers); exit 1 on errors"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medverse-lab", description="MedVerse DAG-parallel reasoning workbench")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return importlib.import_module(args._module).main(args) or 0
    except (ValueError, FileNotFoundError) as exc:  # our errors say what and where
        print(f"medverse-lab {args.command}: {exc}", file=sys.stderr)
        return 2

