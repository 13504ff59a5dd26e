"""Multiple-choice items from cases: the vignette, a stem, the key and plausible distractors.

Three kinds of item (``qtype``): ``diagnosis`` (the key is the case's diagnosis),
``management`` (its ``managed_with`` treatment) and ``test`` (its ``confirmed_by`` test).
Distractors are other diagnoses of the graph (or their treatments or tests), the most
plausible first, and never for a patient of the other sex:

- a diagnosis distractor is supported by some of the case's conditions where possible,
  then of the same specialty, but never by all of them;
- a treatment or test distractor belongs only to diagnoses that share no condition with
  the case (so it does not also treat part of the picture), of the same specialty where
  possible, and shares no content word or drug class with the key or with another
  distractor (so "NSAID analgesia" is no distractor for "NSAID plus colchicine", nor
  "penicillin or amoxicillin" for "empirical antibiotic therapy").
"""

from __future__ import annotations

import random
import re

import networkx as nx

from ..questions import LETTERS, Question
from .cases import Case, supported
from .knowledge import nodes_of, sources, targets
from .vignette import STEMS, patient, vignette

QTYPES = ("diagnosis", "management", "test")
RELATION = {"management": "managed_with", "test": "confirmed_by"}

_STOP = {"and", "or", "with", "plus", "then", "before", "after", "a", "an", "the", "of", "to", "by", "for",
         "in", "on", "within", "one", "hour", "iv", "oral", "intravenous", "intramuscular", "early", "urgent",
         "immediate", "therapy", "test", "testing", "level", "single", "dose", "management", "such", "as",
         "positive", "elevated", "high", "low", "new", "100"}
_CLASSES = {
    "<antibacterial>": {"antibiotic", "ripe", "penicillin", "amoxicillin", "ciprofloxacin", "nitrofurantoin",
                        "doxycycline", "vancomycin", "ceftriaxone", "fidaxomicin", "rifampin", "isoniazid",
                        "pyrazinamide", "ethambutol"},
    "<steroid>": {"glucocorticoid", "corticosteroid", "prednisone", "dexamethasone", "hydrocortisone",
                  "fludrocortisone", "steroid"},
    "<anti-inflammatory>": {"nsaid", "aspirin", "colchicine"},
    "<immunoglobulin>": {"ivig", "immunoglobulin"},
    "<fluids>": {"fluid", "saline", "crystalloid"},
    "<endoscopy>": {"endoscopy", "endoscopic", "ercp", "ligation"},
    "<reperfusion>": {"percutaneous", "thrombolysi", "pci"},
}


def content_words(text: str) -> set[str]:
    """Lower-case content words of ``text`` (plural ``s`` dropped), plus the drug classes
    they belong to (e.g. ``<antibacterial>``)."""
    words = {w[:-1] if len(w) > 3 and w.endswith("s") else w
             for w in re.findall(r"[a-z0-9]+", text.lower())} - _STOP
    return words | {c for c, members in _CLASSES.items() if words & members}


def conflicts(a: str, b: str) -> bool:
    """Whether two treatments or tests share a content word or drug class."""
    return bool(content_words(a) & content_words(b))


def leaks(test: str, findings: list[str]) -> bool:
    """Whether a finding already names the test (its content words all appear in it)."""
    need = {w for w in content_words(test) if not w.startswith("<")}
    return any(need <= content_words(f) for f in findings)


def qtypes_for(g: nx.MultiDiGraph, case: Case) -> list[str]:
    """The kinds of item a case supports: always ``diagnosis``; ``management`` and
    ``test`` when the diagnosis has one (and no finding already names the test)."""
    out = ["diagnosis"]
    if targets(g, case.diagnosis, "managed_with"):
        out.append("management")
    tests = targets(g, case.diagnosis, "confirmed_by")
    if tests and not leaks(tests[0], case.all_findings):
        out.append("test")
    return out


def key_text(g: nx.MultiDiGraph, case: Case, qtype: str) -> str:
    """The correct option's text for a case and item kind."""
    if qtype == "diagnosis":
        return case.diagnosis
    if qtype not in RELATION:
        raise ValueError(f"unknown qtype {qtype!r}; expected one of {QTYPES}")
    found = targets(g, case.diagnosis, RELATION[qtype])
    if not found:
        raise ValueError(f"{case.diagnosis!r} has no {RELATION[qtype]} fact, so no {qtype} item")
    return found[0]


def distractors(g: nx.MultiDiGraph, case: Case, qtype: str, sex: str, n: int, rng: random.Random) -> list[str]:
    """``n`` distractor texts, the most plausible first (see the module docstring)."""
    d = case.diagnosis
    key = key_text(g, case, qtype)
    taken_by_key = set(targets(g, d, RELATION[qtype])) if qtype in RELATION else {d}
    specialty = g.nodes[d]["specialty"]
    ranked = []
    for other in nodes_of(g, "diagnosis"):
        node = g.nodes[other]
        if other == d or node["sex"] not in ("any", sex):
            continue
        if all(other in supported(g, c) for c in case.conditions):
            raise AssertionError(f"case {case.key!r} is not sound: {other!r} fits it too")
        shared = sum(other in supported(g, c) for c in case.conditions)
        if shared and qtype != "diagnosis":
            continue
        ranked.append((-shared, node["specialty"] != specialty, rng.random(), other))
    out: list[str] = []
    for *_, other in sorted(ranked):
        texts = [other] if qtype == "diagnosis" else targets(g, other, RELATION[qtype])
        for text in texts[:1]:
            if text in taken_by_key or text in out:
                continue
            if qtype != "diagnosis" and (conflicts(text, key) or any(conflicts(text, o) for o in out) or any(
                    o in supported(g, c) for o in sources(g, text, RELATION[qtype]) for c in case.conditions)):
                continue
            out.append(text)
        if len(out) == n:
            return out
    raise ValueError(f"only {len(out)} distractors for a {qtype} item on {d!r}; the graph is too small")


def make_question(g: nx.MultiDiGraph, case: Case, qtype: str, rng: random.Random, qid: str,
                  n_options: int = 5) -> Question:
    """A :class:`~medverse_lab.data.questions.Question` for a case: vignette and stem, options
    with the key at a random letter, and in ``meta`` the item kind, diagnosis, case key,
    the key's text and the knowledge paths."""
    if not 2 <= n_options <= len(LETTERS):
        raise ValueError(f"n_options must be 2..{len(LETTERS)}, got {n_options}")
    person = patient(g, case.diagnosis, rng)
    text = vignette(g, case, rng, person) + " " + rng.choice(STEMS[qtype])
    key = key_text(g, case, qtype)
    texts = distractors(g, case, qtype, person.sex, n_options - 1, rng)
    rng.shuffle(texts)
    texts.insert(rng.randrange(n_options), key)
    options = dict(zip(LETTERS, texts))
    letter = LETTERS[texts.index(key)]
    meta = {"qtype": qtype, "diagnosis": case.diagnosis, "case": case.key, "key_text": key,
            "paths": case.paths(None if qtype == "diagnosis" else key)}
    return Question(qid, text, options, letter, meta)
