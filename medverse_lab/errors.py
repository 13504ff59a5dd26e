"""Errors that name what is wrong and where.

A :class:`PlanError` carries every :class:`Problem` found, not only the first, so a
curator fixing a reasoning graph sees the whole list at once.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Every problem kind a program can test for, with a one-line meaning.
PROBLEM_KINDS = {
    "empty-plan": "the plan has no steps",
    "bad-step-id": "a step id is not a positive integer",
    "duplicate-step": "two steps share a number",
    "unknown-dependency": "a step depends on a step that is not in the plan",
    "forward-dependency": "a step depends on a later step (valid DAG, wrong order)",
    "step-order": "step numbers do not increase along the plan",
    "self-dependency": "a step depends on itself",
    "cycle": "dependencies form a cycle",
    "bad-outline": "an outline line does not follow the grammar",
    "bad-header": "a step block does not start with 'Transient Step N: ...'",
    "header-mismatch": "a step block's header differs from the plan",
    "missing-section": "a required section (<Plan>, <Execution>, <Conclusion>) is missing",
    "unclosed-block": "an opening tag has no closing tag",
    "unmatched-close": "a closing tag has no opening tag",
    "not-planned": "a step is executed but never planned",
    "not-executed": "a step is planned but never executed",
    "duplicate-execution": "a step is executed twice",
    "execution-order": "steps are executed in another order than planned",
}


@dataclass(frozen=True)
class Problem:
    """One problem in a plan or trace.

    ``offset`` is a character offset into the source text (``None`` for plans built in
    code); ``line`` and ``column`` are 1-based. ``step`` is the step id concerned.
    """

    kind: str
    message: str
    step: str | None = None
    offset: int | None = None
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}, column {self.column} (offset {self.offset})")
        elif self.offset is not None:
            where.append(f"offset {self.offset}")
        if self.step is not None:
            where.append(f"step {self.step}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message} [{self.kind}]" if prefix else f"{self.message} [{self.kind}]"


def locate(text: str | None, offset: int | None) -> tuple[int | None, int | None]:
    """1-based (line, column) of a character offset in ``text``."""
    if text is None or offset is None:
        return None, None
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


def problem(kind: str, message: str, step=None, offset=None, source: str | None = None) -> Problem:
    """A :class:`Problem` with line and column filled in from ``source``."""
    assert kind in PROBLEM_KINDS, kind
    line, column = locate(source, offset)
    return Problem(kind, message, None if step is None else str(step), offset, line, column)


class PlanError(ValueError):
    """A plan or trace is not valid. ``.problems`` lists every problem found."""

    def __init__(self, problems: list[Problem] | Problem):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        n = len(self.problems)
        lines = [f"{n} problem{'s' if n != 1 else ''} found:"]
        lines += [f"  - {p}" for p in self.problems]
        if any(p.kind in ("forward-dependency", "step-order") for p in self.problems) and not any(
            p.kind in ("cycle", "unknown-dependency", "duplicate-step") for p in self.problems
        ):
            lines.append("  The plan is a valid DAG in the wrong order: plan.renumbered() fixes it.")
        super().__init__("\n".join(lines))

    @property
    def kinds(self) -> list[str]:
        """The kinds of the problems, in order."""
        return [p.kind for p in self.problems]


class PetriNetError(ValueError):
    """A transition cannot fire (not enabled, already fired, or unknown)."""


class LayoutError(ValueError):
    """A layout cannot be built from the given lengths or token ids."""
