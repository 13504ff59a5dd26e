"""Layouts: where each token of a run sits in the plan's structure.

A layout is the logical order of a run's tokens, every token in exactly one segment: the
prefix (prompt, plan, the ``<Execution>`` line), each step in plan order (``<Step>``
through ``</Step>`` and the separator after it), then the conclusion (``</Execution>``
onwards). It also remembers where each step's ``</Step>`` sits, for ``medverse-sft``.
Masks and positions (:mod:`medverse_lab.topology`) are computed from a layout alone.

The ``request`` mode reads an *expanded* layout (:meth:`Layout.for_requests`): each step's
segment first repeats its ancestors' segments (``<Step>`` ... ``</Step>`` and separator,
in plan order), and the conclusion's segment first repeats every step's. Each segment is
then the linear token sequence a stock serving engine decodes as one request (after the
shared prefix), and every token still lies in exactly one segment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from .errors import LayoutError, PlanError, problem
from .format import STEP_HEADER
from .modes import Mode
from .plan import Plan
from .tokens import tag_ids


@dataclass(frozen=True)
class Segment:
    """A contiguous run ``[start, stop)`` of logical indices belonging to one branch."""

    branch: str  # "prefix", a step id, or "conclusion"
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def _check_repeats(plan: Plan, repeats: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    out = {}
    for branch, steps in repeats.items():
        branch, steps = str(branch), tuple(str(s) for s in steps)
        if branch != "conclusion" and branch not in plan:
            raise LayoutError(f"repeats names {branch!r}, which is neither a step of the plan nor 'conclusion'")
        earlier = plan.ids if branch == "conclusion" else plan.ids[:plan.ids.index(branch)]
        bad = [s for s in steps if s not in earlier]
        if bad:
            raise LayoutError(f"repeats[{branch!r}] names {', '.join(bad)}: a segment repeats only earlier steps")
        out[branch] = steps
    return out


def _lens(name: str, value: int | Mapping[str, int], ids: Sequence[str], minimum: int) -> dict[str, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = {i: value for i in ids}
    if not isinstance(value, Mapping):
        raise LayoutError(f"{name} must map step ids to lengths (or be one int), not {type(value).__name__}")
    value = {str(k): v for k, v in value.items()}
    missing = [i for i in ids if i not in value]
    extra = [k for k in value if k not in ids]
    if missing or extra:
        parts = ([f"misses step{'s' if len(missing) > 1 else ''} {', '.join(missing)}"] if missing else []) + \
                ([f"names step{'s' if len(extra) > 1 else ''} {', '.join(extra)} not in the plan"] if extra else [])
        raise LayoutError(f"{name} {' and '.join(parts)}; the plan's steps are {list(ids)}")
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise LayoutError(f"{name}[{k!r}] = {v!r}: must be an integer >= {minimum}")
    return {i: value[i] for i in ids}


def request_repeats(plan: Plan) -> dict[str, tuple[str, ...]]:
    """What each segment of a request layout repeats before its own tokens: a step its
    ancestors (in plan order), the conclusion every step."""
    out = {}
    for sid in plan.ids:
        ancestors = plan.ancestors(sid)
        out[sid] = tuple(a for a in plan.ids if a in ancestors)
    out["conclusion"] = tuple(plan.ids)
    return out


_COLLATOR_STEP = re.compile(r"Transient\s+Step\s+(\d+)", re.IGNORECASE)
_COLLATOR_DEPS = re.compile(r"Dependency\s*:\s*\[([0-9,\s]*)\]", re.IGNORECASE)


def _collator_deps(ids: list[int], tokenizer, tags: dict[str, int]) -> dict[str, tuple[str, ...]]:
    """Step dependencies as the public collator reads them: only inside ``<Outline>`` tags
    and only after the word ``Dependency``; a step it finds none for depends on nothing."""
    deps: dict[str, tuple[str, ...]] = {}
    start = None
    for i, t in enumerate(ids):
        if t == tags["<Outline>"]:
            start = i
        elif t == tags["</Outline>"] and start is not None:
            text = tokenizer.decode(ids[start + 1: i])
            step, found = _COLLATOR_STEP.search(text), _COLLATOR_DEPS.search(text)
            if step:
                listed = found.group(1).split(",") if found else []
                deps[str(int(step.group(1)))] = tuple(str(int(d)) for d in listed if d.strip().isdigit())
            start = None
    return deps


class Layout:
    """The segments of a run: prefix, steps in plan order, conclusion.

    Build one with :meth:`from_plan` (lengths), :meth:`from_token_ids` (a tokenized trace)
    or :meth:`from_trace`; :meth:`for_requests` expands it for mode ``request``.

    ``step_lens`` and ``conclusion_len`` are always a branch's *own* tokens (for a step its
    block and separator); in a request layout a segment is longer by what it repeats
    (:attr:`repeats`), and :attr:`base` is the plain layout of the same trace.
    """

    def __init__(self, plan: Plan, prefix_len: int, step_lens: Mapping[str, int], conclusion_len: int = 0,
                 separator_lens: int | Mapping[str, int] = 0, token_ids: Sequence[int] | None = None, *,
                 repeats: Mapping[str, Sequence[str]] | None = None):
        plan.validate()
        if not isinstance(prefix_len, int) or prefix_len < 0:
            raise LayoutError(f"prefix_len = {prefix_len!r}: must be an integer >= 0")
        if not isinstance(conclusion_len, int) or conclusion_len < 0:
            raise LayoutError(f"conclusion_len = {conclusion_len!r}: must be an integer >= 0")
        self.plan = plan
        self.prefix_len = prefix_len
        self.step_lens = _lens("step_lens", step_lens, plan.ids, 1)
        self.separator_lens = _lens("separator_lens", separator_lens, plan.ids, 0)
        for sid, n in self.step_lens.items():
            if self.separator_lens[sid] >= n:
                raise LayoutError(f"step {sid}: separator of {self.separator_lens[sid]} tokens leaves no room "
                                  f"for </Step> in a segment of {n}")
        self.conclusion_len = conclusion_len
        #: per step id and ``conclusion``: the steps whose segments its segment repeats
        #: first (empty for a plain layout; see :meth:`for_requests`)
        self.repeats: dict[str, tuple[str, ...]] = {} if repeats is None else _check_repeats(plan, repeats)
        own = {**self.step_lens, "conclusion": conclusion_len}
        segs, at = [Segment("prefix", 0, prefix_len)], prefix_len
        for branch in [*plan.ids, "conclusion"]:
            n = sum(self.step_lens[r] for r in self.repeats.get(branch, ())) + own[branch]
            segs.append(Segment(branch, at, at + n))
            at += n
        self.segments: list[Segment] = segs
        self.T = at
        if token_ids is not None and len(token_ids) != self.T:
            raise LayoutError(f"{len(token_ids)} token ids for a layout of {self.T} tokens")
        self.token_ids = None if token_ids is None else tuple(int(i) for i in token_ids)
        #: the dependencies ``medverse-sft`` chunks by (see :func:`_collator_deps`)
        self.collator_deps: dict[str, tuple[str, ...]] = {s.id: s.deps for s in plan.steps}

    # ----- constructors ---------------------------------------------------------------
    @classmethod
    def from_plan(cls, plan: Plan, prefix_len: int, step_lens: Mapping[str, int], conclusion_len: int = 0,
                  separator_lens: int | Mapping[str, int] = 0) -> "Layout":
        """A layout from lengths: ``step_lens`` maps every step id to its segment length
        (``<Step>`` through ``</Step>`` plus ``separator_lens`` tokens after it)."""
        return cls(plan, prefix_len, step_lens, conclusion_len, separator_lens)

    @classmethod
    def from_token_ids(cls, ids: Sequence[int], tokenizer) -> "Layout":
        """The layout of a tokenized trace (training data). The plan is read from the
        ``<Plan>`` tokens, each step block's id from its header line."""
        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        tags = tag_ids(tokenizer)
        where = {tag: [i for i, t in enumerate(ids) if t == tid] for tag, tid in tags.items()}
        if not where["<Plan>"] or not where["</Plan>"]:
            raise LayoutError("no <Plan> ... </Plan> in the token ids: a layout needs the plan")
        p0, p1 = where["<Plan>"][0], where["</Plan>"][0]
        plan = Plan.from_outline(tokenizer.decode(ids[p0 + 1: p1])).validate()
        # pair <Step> with </Step>, naming the index of any that does not pair
        blocks, opened = [], None
        for i in sorted(where["<Step>"] + where["</Step>"]):
            if ids[i] == tags["<Step>"]:
                if opened is not None:
                    raise LayoutError(f"<Step> at token index {opened} is not closed before the <Step> at {i}")
                opened = i
            elif opened is None:
                raise LayoutError(f"</Step> at token index {i} has no matching <Step>")
            else:
                blocks.append((opened, i))
                opened = None
        if opened is not None:
            raise LayoutError(f"<Step> at token index {opened} is never closed")
        executed = []
        for start, close in blocks:
            header = tokenizer.decode(ids[start + 1: close]).split("\n", 1)[0]
            m = STEP_HEADER.match(header)
            if not m:
                raise LayoutError(f"step block at token index {start} has no 'Transient Step N:' header: {header!r}")
            executed.append(m.group("id"))
        if executed != plan.ids:
            problems = [problem("not-planned", f"step {s} is executed but not planned", s) for s in executed
                        if s not in plan] + \
                       [problem("not-executed", f"step {s} is planned but not executed", s) for s in plan.ids
                        if s not in executed]
            if not problems:
                problems = [problem("execution-order", f"steps are executed in order {executed}, "
                                    f"the plan orders them {plan.ids}")]
            raise PlanError(problems)
        end_exec = next((i for i in where["</Execution>"] if not blocks or i > blocks[-1][1]), None)
        starts = [s for s, _ in blocks]
        stops = starts[1:] + ([end_exec if end_exec is not None else blocks[-1][1] + 1] if blocks else [])
        prefix_len = starts[0] if blocks else (end_exec if end_exec is not None else len(ids))
        step_lens = {sid: b - a for sid, a, b in zip(executed, starts, stops)}
        seps = {sid: b - c - 1 for sid, (_, c), b in zip(executed, blocks, stops)}
        conclusion_len = len(ids) - (stops[-1] if blocks else prefix_len)
        layout = cls(plan, prefix_len, step_lens, conclusion_len, seps, token_ids=ids)
        layout.collator_deps = _collator_deps(ids, tokenizer, tags)
        return layout

    def for_requests(self) -> "Layout":
        """The request layout of this trace (for mode ``request``): each step's segment
        repeats its ancestors' segments first, in plan order, and the conclusion's repeats
        every step's, so each segment after the prefix is the token sequence one request
        to a stock serving engine continues. Token ids, if known, are repeated too."""
        if self.expanded:
            return self
        out = Layout(self.plan, self.prefix_len, self.step_lens, self.conclusion_len, self.separator_lens,
                     repeats=request_repeats(self.plan))
        if self.token_ids is not None:
            out.token_ids = tuple(self.token_ids[i] for i in out.base_index())
        out.collator_deps = self.collator_deps
        return out

    def base_index(self) -> list[int]:
        """For each token of this layout, the index of the same token in :attr:`base` (a
        repeated block points at the block it repeats); ``range(T)`` for a plain layout."""
        if not self.expanded:
            return list(range(self.T))
        at, start = self.prefix_len, {}
        for branch in [*self.plan.ids, "conclusion"]:
            start[branch] = at
            at += self.step_lens[branch] if branch != "conclusion" else self.conclusion_len
        out = list(range(self.prefix_len))
        for seg in self.segments[1:]:
            for r, a, z in self.repeated_spans(seg.branch):
                out += range(start[r], start[r] + z - a)
            out += range(start[seg.branch], start[seg.branch] + seg.stop - self.own_start(seg.branch))
        return out

    def for_mode(self, mode: Mode) -> "Layout":
        """The layout ``mode`` reads: the request layout for ``request``, the plain one
        (:attr:`base`) for every other mode."""
        return self.for_requests() if mode == "request" else self.base

    @classmethod
    def from_trace(cls, trace, tokenizer) -> "Layout":
        """The layout of a :class:`~medverse_lab.Trace` tokenized by ``tokenizer``."""
        ids = tokenizer(trace.to_text(), add_special_tokens=False)["input_ids"]
        return cls.from_token_ids(ids, tokenizer)

    # ----- queries ----------------------------------------------------------------------
    def __len__(self) -> int:
        return self.T

    def __repr__(self) -> str:
        steps = ", ".join(f"{s.branch}:{len(s)}" for s in self.segments[1:-1])
        kind = "Layout" if not self.expanded else "Layout.for_requests"
        return f"{kind}(T={self.T}, prefix={self.prefix_len}, steps=[{steps}], conclusion={len(self.segments[-1])})"

    @property
    def expanded(self) -> bool:
        """Whether this is a request layout (segments repeat earlier steps' segments)."""
        return bool(self.repeats)

    @property
    def base(self) -> "Layout":
        """The plain layout of the same trace: ``self`` unless this is a request layout."""
        if not self.expanded:
            return self
        ids = None
        if self.token_ids is not None:
            ids = list(self.token_ids[:self.prefix_len])
            for seg in self.segments[1:]:
                ids += self.token_ids[self.own_start(seg.branch):seg.stop]
        out = Layout(self.plan, self.prefix_len, self.step_lens, self.conclusion_len, self.separator_lens,
                     token_ids=ids)
        out.collator_deps = self.collator_deps
        return out

    def own_start(self, branch: str) -> int:
        """Logical index where ``branch``'s own tokens start (after what its segment repeats)."""
        seg = self.segment(branch)
        return seg.start + sum(self.step_lens[r] for r in self.repeats.get(seg.branch, ()))

    def repeated_spans(self, branch: str) -> list[tuple[str, int, int]]:
        """``(step id, start, stop)`` of each repeated segment at the head of ``branch``'s
        segment, in order (empty in a plain layout)."""
        at, out = self.segment(branch).start, []
        for r in self.repeats.get(str(branch), ()):
            out.append((r, at, at + self.step_lens[r]))
            at += self.step_lens[r]
        return out

    def repeat_of(self, index: int) -> str | None:
        """The step whose segment the token at ``index`` repeats, or ``None`` for a token of
        its own branch (always ``None`` in a plain layout)."""
        branch = self.branch_of(index)
        return next((r for r, a, b in self.repeated_spans(branch) if a <= index < b), None)

    @property
    def branches(self) -> list[str]:
        """Segment names in logical order: ``prefix``, step ids, ``conclusion``."""
        return [s.branch for s in self.segments]

    def segment(self, branch: str) -> Segment:
        for s in self.segments:
            if s.branch == str(branch):
                return s
        raise KeyError(f"no segment {branch!r}; segments are {self.branches}")

    def close_index(self, step_id: str) -> int:
        """Logical index of a step's ``</Step>`` token."""
        seg = self.segment(step_id)
        return seg.stop - 1 - self.separator_lens[seg.branch]

    def segment_lengths(self) -> torch.Tensor:
        return torch.tensor([len(s) for s in self.segments], dtype=torch.long)

    def segment_index(self) -> torch.Tensor:
        """``[T]`` long: for each token the index of its segment in :attr:`segments`."""
        return torch.repeat_interleave(torch.arange(len(self.segments)), self.segment_lengths())

    def branch_of(self, index: int) -> str:
        """The branch of the token at logical ``index``."""
        if not 0 <= index < self.T:
            raise IndexError(f"token index {index} is outside the layout (T={self.T})")
        return next(s.branch for s in self.segments if s.start <= index < s.stop)
