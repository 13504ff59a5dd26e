"""Plant known problems in curated records: practice data for debugging a dataset.

    records = ml.curate.synthesize(200, seed=0)
    broken, planted = ml.curate.plant_problems(records, rate=0.2, seed=0)
    ml.check_dataset(broken)          # finds every planted problem (and nothing else)

Each planted problem is one edit of the assistant turn that :func:`~medverse_lab.check_dataset`
reports under the kind it is planted as.
"""

from __future__ import annotations

import random
import re

from ..records import assistant_text, replace_assistant

#: the kinds :func:`plant_problems` can plant, and the edit each makes
PLANTABLE = {
    "forward-dependency": "a step depends on a later step (one that does not need it: no cycle)",
    "unknown-dependency": "a step depends on step 99, which does not exist",
    "answer-mismatch": "the conclusion names another option than the key",
    "empty-step": "a step block loses its text",
    "not-executed": "the last step's block is removed from the execution",
}


def _plant(text: str, kind: str, key: str | None, rng: random.Random) -> str | None:
    outlines = list(re.finditer(r"Dependency: \[([^\]]*)\]", text))
    steps = list(re.finditer(r"<Step>[^\n]*\n(.*?)</Step>", text, re.DOTALL))
    if kind == "forward-dependency" and len(outlines) >= 2:
        from ...plan import Plan

        plan = Plan.from_outline(text[text.index("<Plan>") + 6:text.index("</Plan>")])
        ids = plan.ids
        for i, a in enumerate(ids):  # a step gains a dependency on a later step that does not need it
            later = [b for b in ids[i + 1:] if a not in plan.ancestors(b)]
            if later:
                m = outlines[i]
                deps = ", ".join(d for d in [m.group(1).strip(), later[0]] if d)
                return text[:m.start()] + f"Dependency: [{deps}]" + text[m.end():]
        return None
    if kind == "unknown-dependency" and outlines:
        m = outlines[rng.randrange(len(outlines))]
        deps = ", ".join(d for d in [m.group(1).strip(), "99"] if d)
        return text[:m.start()] + f"Dependency: [{deps}]" + text[m.end():]
    if kind == "answer-mismatch" and key:
        m = re.search(r"Answer: ([A-J])", text)
        if m:
            other = "B" if key == "A" else "A"
            return text[:m.start(1)] + other + text[m.end(1):]
    if kind == "empty-step" and steps:
        m = steps[rng.randrange(len(steps))]
        return text[:m.start(1)] + text[m.end(1):]
    if kind == "not-executed" and len(steps) >= 2:
        m = steps[-1]
        end = m.end() + (1 if text[m.end():m.end() + 1] == "\n" else 0)
        return text[:m.start()] + text[end:]
    return None


def plant_problems(records: list[dict], rate: float = 0.1, seed: int = 0,
                   kinds: tuple[str, ...] = tuple(PLANTABLE)) -> tuple[list[dict], list[tuple[int, str]]]:
    """Copies of ``records`` with one problem planted in about ``rate`` of them, the
    kinds taken in turn (a kind that cannot be planted in a record gives way to the next).

    Returns ``(records, planted)``: ``planted`` lists ``(index, kind)`` of each record
    changed, ``kind`` one of :data:`PLANTABLE`. The input records are not modified.
    """
    unknown = [k for k in kinds if k not in PLANTABLE]
    if unknown:
        raise ValueError(f"cannot plant {unknown}; plantable kinds are {', '.join(PLANTABLE)}")
    if not 0 <= rate <= 1:
        raise ValueError(f"rate = {rate!r}: must be between 0 and 1")
    rng = random.Random(seed)
    out, planted = [], []
    for i, rec in enumerate(records):
        text = assistant_text(rec) if isinstance(rec, dict) else None
        if text is None or rng.random() >= rate:
            out.append(rec)
            continue
        for k in range(len(kinds)):  # kinds in turn, so every kind shows up in a small set
            kind = kinds[(len(planted) + k) % len(kinds)]
            new = _plant(text, kind, rec.get("answer_idx"), rng)
            if new is not None and new != text:
                out.append(replace_assistant(rec, new))
                planted.append((i, kind))
                break
        else:
            out.append(rec)
    return out, planted
