"""Why token q can or cannot see token k: one cell of a mask, explained.

``allowed`` is read off the visibility matrix the mask is built from (the segment
visibility of the four engine modes, the collator's groups for ``medverse-sft``), so an
explanation cannot disagree with :func:`~medverse_lab.attention_mask`; the mode only
chooses the words.

    ml.explain(layout, q=70, k=50, mode="dag")["text"]
    # 'step 1 is not an ancestor of step 3 (no dependency path 1 -> ... -> 3); ...'
"""

from __future__ import annotations

import torch

from .layout import Layout
from .modes import Mode, check_mode
from .topology import as_layout, group_visibility, sft_chunks


def visible(layout: Layout, mode: Mode, q: int, k: int) -> bool:
    """The matrix entry for tokens q and k before causal order: may q's group see k's?"""
    lens, vis = group_visibility(layout, mode)
    group = torch.repeat_interleave(torch.arange(len(lens)), lens)
    return bool(vis[group[q], group[k]])


def _where(layout: Layout, i: int) -> dict:
    """Branch of token i and, for a step, whether it is in the block or the separator; in
    a request layout, which step's segment it repeats (``None``: its branch's own token)."""
    branch, repeat = layout.branch_of(i), layout.repeat_of(i)
    part = "text"
    if repeat is not None:
        part = "repeat"
    elif branch not in ("prefix", "conclusion"):
        part = "block" if i <= layout.close_index(branch) else "separator"
    return {"branch": branch, "part": part, "repeat": repeat}


def _name(w: dict) -> str:
    b = w["branch"]
    own = f"the {b}" if b in ("prefix", "conclusion") else f"step {b}"
    if w["part"] == "repeat":
        return f"step {w['repeat']}'s block repeated in {own}'s request"
    return own + (" (separator after </Step>)" if w["part"] == "separator" else "")


def explain(layout: Layout, q: int, k: int, mode: Mode = "dag") -> dict:
    """Why token ``q`` can or cannot attend to token ``k`` under ``mode``.

    Returns ``{"q", "k", "mode", "allowed", "reason", "text", "q_branch", "k_branch"}``;
    ``reason`` is one of ``self``, ``causal-future``, ``causal``, ``same-segment``,
    ``prefix``, ``conclusion``, ``dag-ancestor``, ``not-ancestor``, ``earlier-chunk``,
    ``chunk-sibling``, ``speculative-isolation``, ``separator``, ``request-repeat``,
    ``other-request``; ``allowed`` is
    ``attention_mask(layout, mode)[q, k]`` by construction. ``layout`` may be a Run.
    """
    check_mode(mode)
    layout = as_layout(layout, mode)
    for name, i in (("q", q), ("k", k)):
        if not 0 <= i < layout.T:
            raise IndexError(f"{name} = {i} is outside the layout (T={layout.T})")
    wq, wk = _where(layout, q), _where(layout, k)
    qb, kb = wq["branch"], wk["branch"]
    allowed = k <= q and visible(layout, mode, q, k)

    def out(reason: str, text: str) -> dict:
        return {"q": q, "k": k, "mode": mode, "allowed": allowed, "reason": reason, "text": text,
                "q_branch": qb, "k_branch": kb}

    if q == k:
        return out("self", f"token {q} sees itself")
    if k > q:
        return out("causal-future", f"causal future: token {k} comes after token {q} "
                                    "(no mode lets a token see later tokens)")
    if mode == "sequential":
        return out("causal", f"sequential mode is plain causal: {_name(wq)} sees every earlier token")
    if qb == kb and wk["part"] == "repeat":
        return out("request-repeat", f"{_name(wk)}: each request repeats what it reads (its ancestors' blocks; "
                                     f"every block for the conclusion) before its own text, causal order: {k} < {q}")
    if qb == kb:
        return out("same-segment", f"same segment ({_name(wq)}), causal order: {k} < {q}")
    if kb == "prefix":
        return out("prefix", "every token sees the prefix (question and plan)")
    if mode == "request":
        reader = "the conclusion" if qb == "conclusion" else f"step {qb}"
        return out("other-request", f"token {k} is in step {kb}'s request, not in {reader}'s: in request mode a "
                                    "step or the conclusion sees only the prefix and its own request, which repeats "
                                    "the blocks it reads")
    if qb == "conclusion":
        return out("conclusion", "the conclusion sees every earlier token")
    # from here on: q in a step, k in an earlier step
    plan = layout.plan
    chunks = sft_chunks(layout) if mode == "medverse-sft" else plan.chunks()  # the collator cuts its own
    chunk_of = {sid: c for c, chunk in enumerate(chunks) for sid in chunk}
    if mode == "dag":
        if allowed:
            return out("dag-ancestor", f"step {kb} is an ancestor of step {qb}: dependency path "
                                       + " -> ".join(plan.dependency_path(kb, qb)))
        return out("not-ancestor", f"step {kb} is not an ancestor of step {qb} (no dependency path "
                                   f"{kb} -> ... -> {qb}); in dag mode a step sees only its ancestors")
    if mode == "layered":
        cq, ck = chunk_of[qb], chunk_of[kb]
        if allowed:
            return out("earlier-chunk", f"step {kb} is in chunk {ck + 1}, before step {qb}'s chunk {cq + 1}: "
                                        "a step sees every earlier chunk")
        return out("chunk-sibling", f"steps {kb} and {qb} are siblings in chunk {cq + 1}: "
                                    "steps of one chunk never see each other")
    if mode == "speculative":
        return out("speculative-isolation", f"speculative isolation: step {qb} sees only the prefix and "
                                            "its own tokens (every step is dispatched at once)")
    # medverse-sft: the collator's groups (step blocks hide from chunk siblings; the rest is causal)
    if wq["part"] == "separator":
        return out("separator", f"token {q} is separator text after step {qb}'s </Step>: plain causal "
                                "for the collator, it sees every earlier token")
    if wk["part"] == "separator":
        sib = chunk_of[kb] == chunk_of[qb]
        return out("separator", f"token {k} is separator text after step {kb}'s </Step>: plain causal for the "
                                "collator" + (f", so step {qb} reads its chunk sibling {kb} through it (the public "
                                              "recipe's quirk)" if sib else ""))
    if allowed:
        return out("earlier-chunk", f"step {kb}'s block is in chunk {chunk_of[kb] + 1}, before chunk "
                                    f"{chunk_of[qb] + 1}: blocks of different chunks are plain causal")
    return out("chunk-sibling", f"steps {kb} and {qb} are blocks of chunk {chunk_of[qb] + 1}: the collator "
                                "hides blocks of one chunk from each other")


__all__ = ["explain", "visible"]
