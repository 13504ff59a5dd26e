"""Synthetic MedVerse training data: multiple-choice items with plans and reasoning texts.

    records = ml.curate.synthesize(20000, seed=0, split="train")
    ml.curate.write_jsonl(records, "train.jsonl")

Each record has the MedVerse14k shape (``messages``: system, user, assistant) and metadata:
``id``, ``split``, ``question``, ``options``, ``answer_idx``, ``answer`` (the key's text),
``qtype``, ``diagnosis`` and ``paths`` (the knowledge paths the plan comes from). The
assistant turn is ``<Think>\\n<Plan>...</Plan>\\n<Execution>...</Execution>\\n<Conclusion>\\n
...Answer: X\\n</Conclusion>\\n</Think>``; it parses with :func:`~medverse_lab.parse_trace`
and writes back byte for byte.
"""

from __future__ import annotations

import random
import warnings

import networkx as nx
from tqdm.auto import tqdm

from ...format import make_trace, parse_trace
from ...prompt import SYSTEM_PROMPT
from ..questions import Question, format_question, parse_answer
from .cases import SPLITS, enumerate_cases, split_cases
from .errors import CurationError
from .items import make_question, qtypes_for
from .knowledge import load_knowledge
from .paths import plan_from_paths
from .writer import TemplateWriter, Writer

#: how often a case with k conditions (= parallel root steps) is drawn
CONDITION_WEIGHTS = {1: 0.06, 2: 0.36, 3: 0.38, 4: 0.20}
#: how often each item kind is drawn, among those a case supports
QTYPE_WEIGHTS = {"diagnosis": 0.45, "management": 0.4, "test": 0.15}


def build_record(question: Question, paths: list[str], writer: Writer,
                 system_prompt: str | None = SYSTEM_PROMPT) -> dict:
    """A MedVerse record for a question: the plan from its knowledge ``paths``, the step
    and conclusion texts from ``writer``, and the question's metadata.

    Raises :class:`CurationError` naming the question when the writer's conclusion does
    not end in the key's letter or the trace does not round-trip.
    """
    plan = plan_from_paths(paths)
    texts: dict[str, str] = {}
    for step in plan.steps:
        body = writer.step(question, plan, step, {d: texts[d] for d in step.deps})
        texts[step.id] = body.strip() + "\n"
    conclusion = writer.conclusion(question, plan, dict(texts), dict(question.options), question.answer)
    trace = make_trace(plan, texts, "\n" + conclusion.strip() + "\n")
    assistant = trace.to_text()
    chosen = parse_answer(conclusion)
    if question.answer is not None and chosen != question.answer:
        raise CurationError(f"question {question.id}: the conclusion answers {chosen}, the key is {question.answer}")
    if parse_trace(assistant).to_text() != assistant:
        raise CurationError(f"question {question.id}: the assistant turn does not round-trip through parse_trace")
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": format_question(question)},
        {"role": "assistant", "content": assistant},
    ]
    record = {"id": question.id, "messages": messages, "question": question.question,
              "options": dict(question.options), "answer_idx": question.answer,
              "answer": question.answer_text}
    record.update({k: v for k, v in question.meta.items() if k not in record and k != "key_text"})
    record["paths"] = list(paths)
    return record


def _knowledge(knowledge) -> nx.MultiDiGraph:
    if isinstance(knowledge, nx.MultiDiGraph):
        return knowledge
    return load_knowledge(knowledge)


def make_questions(n: int, seed: int = 0, split: str = "train", *, knowledge=None,
              test_fraction: float = 0.15) -> list[Question]:
    """``n`` multiple-choice questions (no reasoning text) from the split's cases; each
    ``meta`` holds ``qtype``, ``diagnosis``, ``case``, ``key_text``, ``paths`` and ``split``.
    Deterministic in ``(n, seed, split, knowledge, test_fraction)``."""
    if split not in SPLITS:
        raise CurationError(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(n, int) or n < 0:
        raise CurationError(f"n must be a non-negative integer, got {n!r}")
    g = _knowledge(knowledge)
    cases = split_cases(enumerate_cases(g), test_fraction)[split]
    if not cases:
        raise CurationError(f"the knowledge graph has no {split} cases")
    by_k: dict[int, dict[str, list]] = {}
    for c in cases:
        by_k.setdefault(len(c.conditions), {}).setdefault(c.diagnosis, []).append(c)
    ks = sorted(by_k)
    k_weights = [CONDITION_WEIGHTS.get(k, 0.05) for k in ks]
    rng = random.Random(f"medverse-lab|{seed}|{split}")
    out = []
    for i in range(n):
        group = by_k[rng.choices(ks, k_weights)[0]]
        case = rng.choice(group[rng.choice(sorted(group))])
        kinds = qtypes_for(g, case)
        qtype = rng.choices(kinds, [QTYPE_WEIGHTS[t] for t in kinds])[0]
        n_options = 5 if rng.random() < 0.7 else 4
        q = make_question(g, case, qtype, rng, f"{split}-{seed}-{i:06d}", n_options)
        q.meta["split"] = split
        out.append(q)
    return out


def synthesize(n: int, seed: int = 0, split: str = "train", writer: Writer | None = None, *,
               knowledge=None, test_fraction: float = 0.15, system_prompt: str | None = SYSTEM_PROMPT,
               errors: str = "raise", progress: bool | None = None) -> list[dict]:
    """``n`` MedVerse records built from the knowledge graph (see the module docstring).

    ``split`` is ``"train"`` or ``"test"``: the two draw from disjoint cases (a case is a
    diagnosis with a set of findings), so they share no question. ``writer`` writes the
    step and conclusion texts (default: :class:`TemplateWriter` with the same seed; an
    :class:`EngineWriter` for a model's words). ``knowledge`` is a graph or a folder of
    knowledge CSVs (default: the shipped one). A question whose record cannot be built
    (the conclusion misses the key, the trace does not round-trip) raises
    :class:`CurationError`, or with ``errors="skip"`` is left out with a warning that
    counts them. ``progress`` shows a bar (default: for any writer but the templates).
    Deterministic: the same arguments give the same records.
    """
    if errors not in ("raise", "skip"):
        raise CurationError(f"errors must be 'raise' or 'skip', got {errors!r}")
    g = _knowledge(knowledge)
    writer = writer if writer is not None else TemplateWriter(g, seed)
    if not isinstance(writer, Writer):
        raise CurationError(f"writer {type(writer).__name__} lacks step() and conclusion(); see curate.writer")
    qs = make_questions(n, seed, split, knowledge=g, test_fraction=test_fraction)
    show = not isinstance(writer, TemplateWriter) if progress is None else progress
    records, dropped = [], []
    for q in tqdm(qs, desc="synthesize", disable=not show, mininterval=1.0):
        try:
            records.append(build_record(q, q.meta["paths"], writer, system_prompt))
        except CurationError as exc:
            if errors == "raise":
                raise
            dropped.append(str(exc))
    if dropped:
        warnings.warn(f"synthesize left out {len(dropped)} of {len(qs)} questions; the first: {dropped[0]}",
                      stacklevel=2)
    return records
