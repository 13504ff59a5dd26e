"""Attention masks, position indices and scheduling for every mode.

One rule per mode, used by training, by the engine and by the widgets alike, so what a
model saw in training is what it sees when decoded.

=============  ==========================================  ===================================
mode           a step token sees                           a step starts at position
=============  ==========================================  ===================================
dag            prefix, its ancestors, its own past          max end of its parents (prefix end)
layered        prefix, earlier chunks, its own past         its chunk's base
speculative    prefix, its own past                         prefix end
sequential     every earlier token                          contiguous
request        prefix, its own segment (which first repeats     prefix end
               its ancestors' blocks)
medverse-sft   the public collator, quirks included         the public collator (shifted twice)
=============  ==========================================  ===================================

``request`` reads the request layout (:meth:`Layout.for_requests`), in which a step's
segment first repeats its ancestors' blocks and the conclusion's every block: each
segment is then prefix + one linear sequence, plain causal from position 0, which is what
a stock serving engine decodes as one request. The other modes read the plain layout.

For the five engine modes the right-hand column is not a rule of its own: it follows from
the segment visibility (:func:`segment_visibility`). A segment starts where the last
earlier segment it sees ends, and a step may be scheduled once every earlier step it
*reads* is done: those whose segments it sees and those its segment repeats
(:func:`read_steps`). So training positions, engine positions and the engine's scheduler
cannot disagree.

Masks are built per *group* of tokens (a segment, or a step block for ``medverse-sft``):
a small group-visibility matrix is expanded to ``[T, T]`` and intersected with causal
order, so a 64-step, 8k-token mask is two ``repeat_interleave`` calls and an ``&``.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch

from .errors import LayoutError
from .layout import Layout, request_repeats
from .modes import ENGINE_MODES, MODES, Mode, check_mode  # noqa: F401 (MODES: public here too)
from .plan import Plan, chunk_steps

def segment_visibility(plan: Plan, mode: Mode) -> torch.Tensor:
    """``[S+2, S+2]`` bool over segments (prefix, steps in plan order, conclusion):
    ``vis[q, k]`` is True when tokens of segment q may see (earlier) tokens of segment k.

    Only for the five engine modes; ``medverse-sft`` is not a segment rule. Under
    ``request`` every segment sees the prefix and itself alone: what it reads of earlier
    steps it repeats (the request layout).
    """
    check_mode(mode, ENGINE_MODES)
    n = len(plan) + 2
    if mode == "sequential":
        return torch.ones(n, n, dtype=torch.bool)
    vis = torch.eye(n, dtype=torch.bool)
    vis[:, 0] = True   # everyone sees the prefix
    if mode == "request":
        return vis
    vis[-1, :] = True  # the conclusion sees everything
    index = {sid: i + 1 for i, sid in enumerate(plan.ids)}
    if mode == "dag":
        for sid in plan.ids:
            for a in plan.ancestors(sid):
                vis[index[sid], index[a]] = True
    elif mode == "layered":
        chunk_of = {sid: c for c, chunk in enumerate(plan.chunks()) for sid in chunk}
        for q in plan.ids:
            for k in plan.ids:
                if chunk_of[k] < chunk_of[q]:
                    vis[index[q], index[k]] = True
    return vis


def sft_chunks(layout: Layout) -> list[list[str]]:
    """Chunks as the public collator cuts them, from the dependencies it reads."""
    return chunk_steps(layout.plan.ids, layout.collator_deps)


def _sft_groups(layout: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """Groups for ``medverse-sft``: plain runs (prefix, each separator, conclusion) see
    everything earlier; step blocks ``<Step>..</Step>`` hide from chunk siblings."""
    lens, block_of = [layout.prefix_len], [-1]
    for sid in layout.plan.ids:
        seg, sep = layout.segment(sid), layout.separator_lens[sid]
        lens += [len(seg) - sep, sep]
        block_of += [sid, -1]
    lens.append(layout.conclusion_len)
    block_of.append(-1)
    chunk_of = {sid: c for c, chunk in enumerate(sft_chunks(layout)) for sid in chunk}
    chunk = torch.tensor([chunk_of[b] if b != -1 else -1 for b in block_of])
    group = torch.arange(len(lens))
    siblings = (chunk[:, None] == chunk[None, :]) & (chunk[:, None] >= 0) & (group[:, None] != group[None, :])
    return torch.tensor(lens, dtype=torch.long), ~siblings


def _expand(vis: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    return vis.repeat_interleave(lens, dim=0).repeat_interleave(lens, dim=1).tril_()


def as_layout(obj, mode: Mode | None = None) -> Layout:
    """``obj`` if it is a :class:`Layout`, else its ``.layout`` (a Run); ``TypeError``
    otherwise. With ``mode``, a ``LayoutError`` when it is not the layout ``mode`` reads
    (the request layout for ``request``, the plain one for the others), saying which to pass."""
    layout = getattr(obj, "layout", obj)
    if not isinstance(layout, Layout):
        raise TypeError(f"expected an ml.Layout or a Run, got {type(obj).__name__}; "
                        "build one with ml.Layout.from_plan(plan, prefix_len, step_lens)")
    if mode == "request" and not layout.expanded:
        raise LayoutError(f"mode 'request' reads the request layout, in which each step first repeats its "
                          f"ancestors' blocks and the conclusion every block ({layout.for_requests().T} tokens, not "
                          f"{layout.T}): pass layout.for_requests() (or layout.for_mode('request'))")
    if mode is not None and mode != "request" and layout.expanded:
        raise LayoutError(f"this is a request layout (its segments repeat earlier steps); mode {mode!r} reads the "
                          f"plain layout: pass layout.base (or layout.for_mode({mode!r}))")
    return layout


def group_visibility(layout: Layout, mode: Mode = "dag") -> tuple[torch.Tensor, torch.Tensor]:
    """``(lens [G], vis [G, G])``: the tokens of ``layout`` in G contiguous groups (the
    segments; for ``medverse-sft`` step blocks and the plain runs around them) of ``lens``
    tokens, and whether a group's tokens may see an earlier group's. The mask of ``mode``
    is this matrix expanded to tokens and cut by causal order; groups may be empty."""
    check_mode(mode)
    layout = as_layout(layout, mode)
    if mode == "medverse-sft":
        return _sft_groups(layout)
    return layout.segment_lengths(), segment_visibility(layout.plan, mode)


def attention_mask(layout: Layout, mode: Mode = "dag") -> torch.Tensor:
    """``[T, T]`` bool: ``mask[q, k]`` is True when token q may attend to token k.
    ``layout`` may also be a Run (its ``run.layout``); for ``request`` it is the request
    layout (:meth:`Layout.for_requests`), for the other modes the plain one."""
    lens, vis = group_visibility(layout, mode)
    return _expand(vis, lens)


def _earlier_seen(plan: Plan, mode: Mode) -> dict[str, list[str]]:
    """For each step (and ``conclusion``), the earlier steps it sees under ``mode``: read
    off :func:`segment_visibility`, the one rule both positions and scheduling follow."""
    vis = segment_visibility(plan, mode).tolist()
    ids = [*plan.ids, "conclusion"]
    return {sid: [ids[k] for k in range(q) if vis[q + 1][k + 1]] for q, sid in enumerate(ids)}


def read_steps(plan: Plan, mode: Mode, seen: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """For each step (and ``conclusion``), the earlier steps it reads under ``mode``: those
    whose segments it sees, and under ``request`` those its own segment repeats (its
    ancestors; every step for the conclusion). A step may start once all are done.
    ``seen`` is :func:`_earlier_seen` when the caller has it already."""
    seen = _earlier_seen(plan, mode) if seen is None else seen
    if mode != "request":
        return seen
    repeats = request_repeats(plan)
    return {sid: [s for s in plan.ids if s in steps or s in repeats[sid]] for sid, steps in seen.items()}


def segment_starts(plan: Plan, prefix_len: int, step_lens: Mapping[str, int], mode: Mode) -> dict[str, int]:
    """Start position of each step's segment (and of ``conclusion``'s) under ``mode``.

    One rule for every mode: a segment starts where the last earlier segment it sees ends
    (the prefix end when it sees none). ``step_lens`` may hold only some steps (those
    finished so far): a start is given once every earlier step the segment reads
    (:func:`read_steps`) is placed and its length known, so the engine places a step the
    moment it may start, with the rule training used.
    """
    check_mode(mode, ENGINE_MODES)
    starts: dict[str, int] = {}
    ends: dict[str, int] = {}
    seen_by = _earlier_seen(plan, mode)
    reads = read_steps(plan, mode, seen_by)
    for sid, seen in seen_by.items():
        if all(s in ends for s in reads[sid]):
            starts[sid] = max((ends[s] for s in seen), default=prefix_len)
            if sid in step_lens:
                ends[sid] = starts[sid] + step_lens[sid]
    return starts


def ready_steps(plan: Plan, mode: Mode, done: Iterable[str]) -> list[str]:
    """Steps not in ``done`` that may start under ``mode`` once ``done`` have finished:
    those whose every earlier step they read is done (the scheduler of ``mode``).

    ``dag`` is the Petri net (a step is enabled when its ancestors are done), ``layered``
    goes chunk by chunk, ``speculative`` starts everything at once, ``sequential`` one
    step at a time and ``request`` as ``dag`` (a step's request repeats its ancestors):
    all follow from :func:`segment_visibility` and :func:`read_steps`.
    """
    done = set(done)
    return [sid for sid, reads in read_steps(plan, mode).items()
            if sid != "conclusion" and sid not in done and all(s in done for s in reads)]


def _sft_positions(layout: Layout) -> torch.Tensor:
    """The public collator's positions, reproduced including its double shift."""
    pos = torch.arange(layout.T, dtype=torch.long)
    if not len(layout.plan):
        return pos
    blocks = {sid: (layout.segment(sid).start, layout.close_index(sid) + 1) for sid in layout.plan.ids}
    base = blocks[layout.plan.ids[0]][0]
    for chunk in sft_chunks(layout):
        longest = max(b - a for a, b in (blocks[s] for s in chunk))
        for sid in chunk:
            a, b = blocks[sid]
            pos[a:b] += base - a  # from the raw index: earlier tail moves stay in, hence twice
        raw_end = max(blocks[s][1] for s in chunk)
        pos[raw_end:] += base + longest - raw_end
        base += longest
    return pos


def position_ids(layout: Layout, mode: Mode = "dag") -> torch.Tensor:
    """``[T]`` long: the position index of every token under ``mode`` (``layout`` may be a
    Run; for ``request`` the request layout, where each segment counts on from the prefix)."""
    check_mode(mode)
    layout = as_layout(layout, mode)
    if mode == "medverse-sft":
        return _sft_positions(layout)
    starts = segment_starts(layout.plan, layout.prefix_len, layout.step_lens, mode)
    first_pos = torch.tensor([0] + [starts[s] for s in layout.plan.ids] + [starts["conclusion"]])
    first_idx = torch.tensor([s.start for s in layout.segments])
    seg = layout.segment_index()
    return torch.arange(layout.T) + (first_pos - first_idx)[seg]


def mask_diff(layout: Layout, a: str, b: str) -> torch.Tensor:
    """``[T, T]`` int8: +1 where only mode ``a`` allows attention, -1 where only ``b`` does.
    Both modes must read the same layout (``request`` reads another one: compare it with itself)."""
    if (a == "request") != (b == "request"):
        raise LayoutError(f"modes {a!r} and {b!r} read different layouts (request repeats earlier steps' blocks), "
                          "so their masks have different sizes and no cell-by-cell diff")
    ma, mb = attention_mask(layout, a), attention_mask(layout, b)
    return ma.to(torch.int8) - mb.to(torch.int8)
