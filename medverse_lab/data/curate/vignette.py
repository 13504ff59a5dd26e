"""Vignettes: a case's findings as a short clinical presentation, with varied wording.

Every finding appears verbatim, so the knowledge graph maps the text back to it.
"""

from __future__ import annotations

import random
from typing import NamedTuple

import networkx as nx

from .cases import Case

# the order findings are told in: what the patient says, then what is found
KIND_ORDER = ("symptom", "history", "vital", "sign", "ecg", "lab", "imaging")
_OPENING = ["presents with", "comes to the emergency department with", "reports", "complains of",
            "is evaluated for"]
_OPENING_CHILD = ["is brought to the clinic with", "is brought to the emergency department with",
                  "is brought in with"]
_SENTENCES = {
    "history": ["History is notable for {x}.", "{He} reports {x}.", "{His} history includes {x}."],
    "history_child": ["History is notable for {x}.", "The parents report {x}."],
    "vital": ["Vital signs show {x}.", "On arrival there is {x}."],
    "sign": ["Examination shows {x}.", "On examination there is {x}.", "Examination reveals {x}."],
    "ecg": ["ECG shows {x}.", "An electrocardiogram shows {x}."],
    "lab": ["Labs show {x}.", "Laboratory studies show {x}.", "Tests reveal {x}."],
    "imaging": ["Imaging shows {x}.", "Imaging reveals {x}."],
    "symptom": ["{He} also reports {x}.", "There is also {x}."],
}
STEMS = {
    "diagnosis": ["Which of the following is the most likely diagnosis?", "What is the most likely diagnosis?"],
    "management": ["Which of the following is the most appropriate management?",
                   "What is the most appropriate treatment?"],
    "test": ["Which test best confirms the diagnosis?", "Which of the following best confirms the diagnosis?"],
}


def join(items: list[str]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


class Patient(NamedTuple):
    """Who a vignette is about: ``Patient("A 54-year-old man", "male", "he", False)``."""

    phrase: str
    sex: str
    pronoun: str
    young_child: bool  # under 6: the parents tell the history


def patient(g: nx.MultiDiGraph, diagnosis: str, rng: random.Random) -> Patient:
    """A patient in the diagnosis' age range, of its sex (either when ``any``)."""
    lo, hi, unit = g.nodes[diagnosis]["age"]
    sex = g.nodes[diagnosis]["sex"]
    sex = sex if sex != "any" else rng.choice(["female", "male"])
    age = rng.randint(lo, hi)
    years = age if unit == "years" else 0
    if years >= 18:
        noun = "woman" if sex == "female" else "man"
    else:
        noun = "girl" if sex == "female" else "boy"
    article = "An" if str(age)[0] == "8" or age in (11, 18) else "A"
    return Patient(f"{article} {age}-{unit[:-1]}-old {noun}", sex, "she" if sex == "female" else "he", years < 6)


def vignette(g: nx.MultiDiGraph, case: Case, rng: random.Random, person: Patient | None = None) -> str:
    """The case as a few sentences: who, the symptoms, then history, vitals, signs, tests."""
    who, _, he, child = person or patient(g, case.diagnosis, rng)
    his = "her" if he == "she" else "his"
    by_kind: dict[str, list[str]] = {}
    for f in case.all_findings:
        by_kind.setdefault(g.nodes[f]["type"], []).append(f)
    for found in by_kind.values():
        rng.shuffle(found)
    symptoms = by_kind.pop("symptom", [])
    if symptoms:
        first = symptoms[:2] if rng.random() < 0.5 else symptoms[:1]
        opening = rng.choice(_OPENING_CHILD if child else _OPENING)
        sentences = [f"{who} {opening} {join(first)}."]
        if symptoms[len(first):]:
            by_kind["symptom"] = symptoms[len(first):]
    else:
        sentences = [f"{who} {'is brought for evaluation' if child else 'is evaluated'}."]
    for kind in KIND_ORDER:
        found = by_kind.get(kind)
        if not found:
            continue
        key = "history_child" if kind == "history" and child else kind
        template = rng.choice(_SENTENCES[key])
        text = template.format(x=join(found), He=he.capitalize(), His=his.capitalize())
        sentences.append(text[0].upper() + text[1:])
    return " ".join(sentences)
