"""What happened during a run, beyond its tokens: small frozen records in ``run.events``.

Match them by type, not by string::

    for ev in run.events:
        if isinstance(ev, ml.engine.ForcedClose):
            print(ev.branch, "was closed:", ev.reason)

and use the accessors for the common questions: ``run.plan_error``,
``run.forced_closes``, ``run.rerun_event``. Every event has ``kind`` (a short name for
tables and JSON) and ``to_dict()``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from ..errors import PlanError
from ..modes import Mode
from ..plan import Plan


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str] = "event"

    def to_dict(self) -> dict:
        """``{"kind": ..., field: value, ...}`` with JSON-friendly values (errors and plans
        as text)."""
        out = {"kind": self.kind}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_outline(tagged=False) if isinstance(v, Plan) else str(v) \
                if isinstance(v, Exception) else list(v) if isinstance(v, tuple) else v
        return out


@dataclass(frozen=True)
class PhaseStart(Event):
    """A phase began: ``plan``, ``steps`` (with the ``mode`` it decodes in) or ``conclusion``."""

    kind: ClassVar[str] = "phase"
    phase: str
    time_s: float
    mode: Mode | None = None


@dataclass(frozen=True)
class StepEvent(Event):
    """Something happened to step ``branch`` at ``time_s``, around forward call ``forward_call``."""

    branch: str
    time_s: float
    forward_call: int


@dataclass(frozen=True)
class StepStart(StepEvent):
    """Step ``branch`` was scheduled at ``position``, before forward call ``forward_call``."""

    kind: ClassVar[str] = "step-start"
    position: int


@dataclass(frozen=True)
class StepEnd(StepEvent):
    """Step ``branch`` closed after ``tokens`` tokens (its block, separator included; in mode
    ``request`` not counting the blocks its request repeats)."""

    kind: ClassVar[str] = "step-end"
    tokens: int


@dataclass(frozen=True)
class ForcedClose(Event):
    """The engine closed ``branch`` itself: ``reason`` is ``limit`` (``limit`` body tokens
    sampled) or ``stray-token`` (the model wrote ``token``, a tag that cannot appear there)."""

    kind: ClassVar[str] = "forced-close"
    branch: str
    reason: str
    token: str
    limit: int
    forward_call: int


@dataclass(frozen=True)
class PlanRejected(Event):
    """The model's plan did not parse (``error`` lists every problem): the run went on
    with ``plan`` (what could be salvaged) in ``fallback`` mode instead of ``requested_mode``."""

    kind: ClassVar[str] = "plan-error"
    error: PlanError
    requested_mode: Mode
    fallback: str
    plan: Plan
    plan_text: str


@dataclass(frozen=True)
class Rerun(Event):
    """This run reran ``step`` of an earlier one: ``dropped`` steps (and the conclusion)
    were decoded again, ``kept_slots`` cache slots reused; ``text`` says the step's body
    was given, ``description`` the new step description (then ``reason`` says why the
    whole of Phase II was decoded again)."""

    kind: ClassVar[str] = "rerun"
    step: str
    dropped: tuple[str, ...]
    kept_slots: int
    seed: int | None
    text: bool
    description: str | None = None
    reason: str | None = None


__all__ = ["Event", "PhaseStart", "StepEvent", "StepStart", "StepEnd", "ForcedClose", "PlanRejected", "Rerun"]
