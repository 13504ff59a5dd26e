"""IPython magics: ``%load_ext medverse_lab`` registers them.

- ``%medverse run "QUESTION" [--mode dag] [--seed 0] [--temperature T]
  [--max-step-tokens 64] [--engine NAME] [--plan NAME]`` runs the question in the
  background and shows a :class:`RunViewer` (``--engine`` names a notebook variable; by
  default the variable ``engine`` if it holds an Engine, else the embedded model).
- ``%%medverse_plan [NAME]`` parses the cell as an outline and opens a
  :class:`PlanEditor` (kept in the variable NAME when given), or shows the PlanError.
"""

from __future__ import annotations

import argparse
import shlex

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from ..errors import PlanError
from ..modes import ENGINE_MODES
from ..plan import Plan
from .plan_editor import PlanEditor
from .run_viewer import RunViewer

USAGE = ('usage: %medverse run "QUESTION" [--mode {' + ",".join(ENGINE_MODES) + '}] [--seed N] '
         "[--temperature T] [--max-step-tokens N] [--engine NAME] [--plan NAME]")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ValueError(f"{message}\n{USAGE}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="%medverse", add_help=False)
    p.add_argument("command", choices=["run"])
    p.add_argument("question")
    p.add_argument("--mode", choices=list(ENGINE_MODES), default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, help="default: the model's generation config")
    p.add_argument("--max-step-tokens", type=int, default=64)
    p.add_argument("--engine", default=None)
    p.add_argument("--plan", default=None)
    return p


@magics_class
class MedverseMagics(Magics):
    """``%medverse run ...`` and ``%%medverse_plan``."""

    _default_engine = None

    def _engine(self, name: str | None):
        from ..engine import Engine

        ns = self.shell.user_ns
        if name is not None:
            if name not in ns:
                raise ValueError(f"no variable {name!r} in the notebook: --engine names a variable holding an Engine")
            return ns[name]
        if isinstance(ns.get("engine"), Engine):
            return ns["engine"]
        if MedverseMagics._default_engine is None:
            MedverseMagics._default_engine = Engine.load()
        return MedverseMagics._default_engine

    @line_magic
    def medverse(self, line: str):
        """%medverse run "QUESTION" [--mode dag] ...: a RunViewer decoding in the background."""
        try:
            args = _parser().parse_args(shlex.split(line))
            engine = self._engine(args.engine)
            plan = None
            if args.plan is not None:
                plan = self.shell.user_ns.get(args.plan)
                if plan is None:
                    raise ValueError(f"no variable {args.plan!r} in the notebook: --plan names a Plan or PlanEditor")
                plan = plan.plan if isinstance(plan, PlanEditor) else plan
        except (ValueError, FileNotFoundError) as exc:
            print(exc)
            return None
        viewer = RunViewer(engine, question=args.question, plan=plan)
        viewer.mode = args.mode or viewer.mode
        viewer.seed, viewer.max_step_tokens = args.seed, args.max_step_tokens
        if args.temperature is not None:
            viewer.temperature = args.temperature
        viewer.submit()
        return viewer

    @cell_magic
    def medverse_plan(self, line: str, cell: str):
        """%%medverse_plan [NAME]: the cell's outline in a PlanEditor, or its PlanError."""
        try:
            plan = Plan.from_outline(cell)
        except PlanError as exc:
            print(exc)
            return None
        editor = PlanEditor(plan)
        name = line.strip()
        if name:
            if not name.isidentifier():
                print(f"{name!r} is not a variable name")
                return None
            self.shell.user_ns[name] = editor
        return editor


def load_ipython_extension(ipython) -> None:
    """Register the magics (``%load_ext medverse_lab``)."""
    ipython.register_magics(MedverseMagics)
