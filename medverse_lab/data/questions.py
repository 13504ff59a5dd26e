"""Multiple-choice questions: load them from JSONL files or records, render the user turn.

    qs = ml.load_questions("../shared/data/medqa_test.jsonl")
    qs[0].options, qs[0].answer          # {"A": "...", ...}, "C"
    print(ml.questions.format_question(qs[0]))

A record has ``question`` (or a user turn that is a rendered question, read by
:func:`medverse_lab.data.records.turns`),
``options`` (a dict of letters A-J, a list, or ``"A. ...\\nB. ..."`` text) and the key as
``answer_idx`` (a letter), or in ``answer`` as a letter, ``"C. text"`` or an option's text.
The user turn is ``Question:\\n...\\nOptions:\\nA. ...`` — the Curator writes the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .records import read_records, record_id, user_text

LETTERS = "ABCDEFGHIJ"
_KEY_FIELDS = {"id", "question", "Question", "options", "Options", "answer_idx", "answer", "messages"}
_OPTION_LINE = re.compile(r"^\s*\(?([A-J])\)?[.):]\s*(.*\S)\s*$")
_LETTER_KEY = re.compile(r"^\s*\(?([A-Ja-j])\)?(?:\s*[.):]\s*(.*?))?\s*$", re.DOTALL)
_ANSWER_RE = re.compile(r"(?i:answer(?:\s+is)?)\s*[:：\-]?\s*\(?([A-J])\)?(?![A-Za-z])")


@dataclass
class Question:
    """One multiple-choice question. ``answer`` is the key's letter (``None`` when unknown);
    ``meta`` holds the record's other fields."""

    id: str
    question: str
    options: dict[str, str]
    answer: str | None = None
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def answer_text(self) -> str | None:
        """The key's option text."""
        return self.options.get(self.answer) if self.answer else None


def format_question(q: Question) -> str:
    """The user turn: ``Question:\\n{question}\\nOptions:\\nA. ...\\nB. ...``."""
    options = "\n".join(f"{k}. {v}" for k, v in q.options.items())
    return f"Question:\n{q.question.strip()}\nOptions:\n{options}"


def parse_user_turn(text: str) -> tuple[str, dict[str, str]]:
    """``(question, options)`` of a user turn written by :func:`format_question` (or in
    the public ``Question: ... A. ...`` shape). Options are empty when there are none."""
    body = re.sub(r"^\s*Question:\s*", "", text, count=1)
    head, sep, tail = body.rpartition("\nOptions:")
    if not sep:
        lines = body.split("\n")
        first = next((i for i, ln in enumerate(lines) if _OPTION_LINE.match(ln)
                      and _OPTION_LINE.match(ln).group(1) == "A"), len(lines))
        head, tail = "\n".join(lines[:first]), "\n".join(lines[first:])
    return head.strip(), _options_from_text(tail)


def _options_from_text(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _OPTION_LINE.match(line)
        if m:
            out[m.group(1)] = m.group(2)
        elif line.strip() and out:  # a wrapped option continues on the next line
            last = next(reversed(out))
            out[last] += " " + line.strip()
    return out


def parse_answer(text: str) -> str | None:
    """The letter of the last ``Answer: X`` (or ``answer is (X)``) in ``text``, else
    ``None``. The letter must be a capital A-J, so "the answer is a ..." is no answer."""
    found = _ANSWER_RE.findall(text or "")
    return found[-1] if found else None


def _norm(text: str) -> str:
    return " ".join(str(text).split()).casefold().rstrip(".")


def normalize_options(options, where: str = "record") -> dict[str, str]:
    """Options as ``{letter: text}`` from a dict, a list or ``"A. ..."`` lines, each text on
    one line (whitespace collapsed); raises ``ValueError`` naming ``where`` when they are
    not 2-10 non-empty options lettered A-J."""
    if isinstance(options, str):
        parsed = _options_from_text(options)
    elif isinstance(options, dict):
        parsed = {str(k).strip().upper(): v for k, v in options.items()}
    elif isinstance(options, (list, tuple)):
        if len(options) > len(LETTERS):
            raise ValueError(f"{where}: {len(options)} options; at most {len(LETTERS)} (A-J) are supported")
        parsed = dict(zip(LETTERS, options))
    else:
        raise ValueError(f"{where}: options must be a dict of letters, a list or 'A. ...' lines, "
                         f"got {type(options).__name__}")
    bad = [k for k in parsed if len(k) != 1 or k not in LETTERS]
    if bad:
        raise ValueError(f"{where}: option keys must be letters A-J, got {bad}")
    empty = [k for k, v in parsed.items() if not isinstance(v, str) or not v.strip()]
    if empty:
        raise ValueError(f"{where}: option(s) {empty} have no text")
    if len(parsed) < 2:
        raise ValueError(f"{where}: a multiple-choice question needs at least 2 options, got {len(parsed)}")
    return {k: " ".join(v.split()) for k, v in parsed.items()}


def resolve_key(record: dict, options: dict[str, str] | None, where: str = "record") -> str | None:
    """The key's letter from ``answer_idx``, or from ``answer`` (a letter, ``"C. text"``
    or an option's text); ``None`` when the record has neither. Raises ``ValueError``
    naming ``where`` when the key is not an option or the two fields disagree.

    With ``options=None`` (unknown), any letter A-J is accepted and ``answer`` counts
    only when it starts with one."""
    if options is None:
        for value in (record.get("answer_idx"), record.get("answer")):
            m = _LETTER_KEY.match(str(value)) if isinstance(value, str) and value.strip() else None
            if m:
                return m.group(1).upper()
        return None
    idx = record.get("answer_idx")
    letter = None
    if idx not in (None, ""):
        m = _LETTER_KEY.match(str(idx))
        if not m or m.group(2) or m.group(1).upper() not in options:
            raise ValueError(f"{where}: answer_idx {idx!r} is not one of the option letters {list(options)}")
        letter = m.group(1).upper()
    answer = record.get("answer")
    if answer in (None, "") or not isinstance(answer, str):
        return letter
    from_answer = _key_from_answer(answer, options)
    if from_answer is None and letter is None:
        raise ValueError(f"{where}: answer {answer[:60]!r} is neither an option letter, 'C. text', "
                         f"nor the text of one of the options {list(options)}")
    if from_answer is not None and letter is not None and from_answer != letter:
        raise ValueError(f"{where}: answer {answer[:60]!r} is option {from_answer} but answer_idx is {letter}")
    return letter or from_answer


def _key_from_answer(answer: str, options: dict[str, str]) -> str | None:
    texts = {_norm(v): k for k, v in options.items()}
    if _norm(answer) in texts:
        return texts[_norm(answer)]
    m = _LETTER_KEY.match(answer)
    if m and m.group(1).upper() in options:
        rest = m.group(2)
        if not rest or _norm(rest) == _norm(options[m.group(1).upper()]):
            return m.group(1).upper()
    return None


def question_from_record(record: dict, default_id: str, where: str = "record") -> Question:
    """One :class:`Question` from a record (see the module docstring); ``ValueError``
    naming ``where`` when it is malformed."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    text = record.get("question", record.get("Question"))
    options = record.get("options", record.get("Options"))
    if text is None:
        user = user_text(record)
        if user is not None:
            text, from_turn = parse_user_turn(user)
            options = options if options is not None else from_turn
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: no question text (expected a 'question' string or a user turn)")
    if options is None:
        raise ValueError(f"{where}: no options (expected an 'options' dict of letters A-J)")
    options = normalize_options(options, where)
    answer = resolve_key(record, options, where)
    qid = record_id(record, default_id)
    meta = {k: v for k, v in record.items() if k not in _KEY_FIELDS}
    return Question(qid, text.strip(), options, answer, meta)


def load_questions(source: str | Path | Iterable[dict]) -> list[Question]:
    """Questions from a ``.jsonl``/``.json`` file or from records (dicts).

    Ids come from an ``id`` field, else ``"<file stem>-<line>"`` (or the 1-based index of a
    record). Raises ``ValueError`` naming the file and line (or record) of a malformed one.
    """
    if isinstance(source, (str, Path)):
        stem = Path(source).stem
        return [question_from_record(rec, f"{stem}-{n}", where) for n, where, rec in read_records(source)]
    out = []
    for n, rec in enumerate(source, start=1):
        out.append(question_from_record(rec, str(n), f"record {n}"))
    return out


__all__ = ["Question", "load_questions", "format_question", "parse_user_turn", "parse_answer",
           "normalize_options", "resolve_key", "question_from_record"]
