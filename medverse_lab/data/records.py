"""Records: reading and writing record files, and the turns of one record.

The one place that knows the shapes a MedVerse record comes in, so that training, the
checker, question loading and curation read a record the same way:

- ``messages``: ``[{"role": "system" | "user" | "assistant", "content": ...}, ...]``
  (MedVerse14k, OpenAI chat);
- ``conversations``: ``[{"from": "system" | "human" | "gpt", "value": ...}, ...]``
  (ShareGPT);
- ``text``: one ChatML string (``<|im_start|>user ... <|im_end|>``), or a bare
  assistant trace starting at ``<Plan>``.

A record with several turns of a role is read by its *last* one: the last user turn is the
question the last assistant turn answers.

>>> rec = {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "<Plan>..."}]}
>>> turns(rec)
Turns(system=None, user='Q?', assistant='<Plan>...')
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

# (list key, role key, content key, {our role: the names it goes by})
_CHAT_SHAPES = (
    ("messages", "role", "content", {"system": ("system",), "user": ("user",), "assistant": ("assistant",)}),
    ("conversations", "from", "value", {"system": ("system",), "user": ("human", "user"),
                                        "assistant": ("gpt", "assistant")}),
)
_CHATML = "<|im_start|>{role}\n"
_CHATML_END = "<|im_end|>"


class Turns(NamedTuple):
    """The system, user and assistant turn of a record (``None`` where it has none)."""

    system: str | None
    user: str | None
    assistant: str | None


def _chat_turn(record: dict, role: str) -> str | None:
    for key, role_key, content_key, names in _CHAT_SHAPES:
        chat = record.get(key)
        if isinstance(chat, list):
            found = [t.get(content_key) for t in chat
                     if isinstance(t, dict) and t.get(role_key) in names[role] and isinstance(t.get(content_key), str)]
            if found:
                return found[-1]
    return None


def _chatml_turn(text: str, role: str) -> str | None:
    marker = _CHATML.format(role=role)
    if marker not in text:
        return None
    return text.rsplit(marker, 1)[1].split(_CHATML_END, 1)[0]


def _turn(record: dict, role: str) -> str | None:
    found = _chat_turn(record, role)
    if found is not None:
        return found
    text = record.get("text")
    if not isinstance(text, str):
        return None
    found = _chatml_turn(text, role)
    if found is None and role == "assistant" and "<Plan>" in text:
        return text  # a bare trace is all assistant turn
    return found


def turns(record: dict) -> Turns:
    """The (last) system, user and assistant turn of ``record``, in any shape above."""
    if not isinstance(record, dict):
        return Turns(None, None, None)
    return Turns(_turn(record, "system"), _turn(record, "user"), _turn(record, "assistant"))


def training_turns(record: dict, name: str | None = None) -> Turns:
    """:func:`turns` of a record to train on: ``ValueError`` naming it (``name``, else its
    ``id``) when it lacks the user or the assistant turn."""
    found = turns(record)
    if found.user is None or found.assistant is None:
        name = name or f"record {record_id(record, '?')!r}"
        raise ValueError(f"{name} has no user and assistant turns (messages, conversations or ChatML text)")
    return found


def assistant_text(record: dict) -> str | None:
    """The (last) assistant turn of ``record``, or ``None`` when it has none."""
    return turns(record).assistant


def user_text(record: dict) -> str | None:
    """The (last) user turn of ``record``, or ``None`` when it has none."""
    return turns(record).user


def replace_assistant(record: dict, text: str) -> dict:
    """A copy of ``record`` whose (last) assistant turn is ``text``; the input is untouched.
    ``ValueError`` when the record has no assistant turn."""
    out = dict(record)
    for key, role_key, content_key, names in _CHAT_SHAPES:
        chat = record.get(key)
        if isinstance(chat, list):
            at = [i for i, t in enumerate(chat) if isinstance(t, dict) and t.get(role_key) in names["assistant"]
                  and isinstance(t.get(content_key), str)]
            if at:
                out[key] = [dict(t) if isinstance(t, dict) else t for t in chat]
                out[key][at[-1]][content_key] = text
                return out
    old = _turn(record, "assistant") if isinstance(record.get("text"), str) else None
    if old is not None:
        head, sep, tail = record["text"].rpartition(old)  # the last occurrence is the last turn
        out["text"] = head + text + tail
        return out
    raise ValueError(f"record {record.get('id', '?')!r} has no assistant turn to replace")


def record_id(record, default) -> str:
    """The record's ``id`` field as a string, else ``default``."""
    return str(record.get("id", default)) if isinstance(record, dict) else str(default)


# ----- files ---------------------------------------------------------------------------
def write_jsonl(records: Iterable[dict], path: str | Path) -> Path:
    """Write records one JSON object per line (UTF-8, parents created); returns the path.
    The file appears only once every record is written: a failure leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    try:
        with open(part, "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        part.replace(path)
    finally:
        part.unlink(missing_ok=True)
    return path


def read_records(path: str | Path, errors: str = "raise") -> Iterator[tuple[int | str, str, dict]]:
    """Yield ``(number, where, record)`` for each record of a ``.jsonl`` or ``.json`` file.

    JSONL: one object per non-blank line, ``number`` is the line. JSON: a list of records
    (``number`` is the 1-based index), one record, or an object mapping ids to records
    (``number`` is the id). ``where`` names the place for messages, e.g. ``"data.jsonl line
    7"``. A line that is not JSON raises ``ValueError`` naming it, or with
    ``errors="yield"`` is yielded as ``(number, where, ValueError)`` so that a checker can
    report it and go on.
    """
    if errors not in ("raise", "yield"):
        raise ValueError(f"errors must be 'raise' or 'yield', got {errors!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix == ".json":
        yield from _read_json(path)
        return
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path.name} line {n}"
            try:
                yield n, where, json.loads(line)
            except json.JSONDecodeError as exc:
                err = ValueError(f"{where}: not JSON ({exc.msg} at column {exc.colno})")
                if errors == "raise":
                    raise err from None
                yield n, where, err


def load_records(path: str | Path) -> list[dict]:
    """Every record of a ``.jsonl``/``.json`` file (see :func:`read_records`); a line that
    is not JSON raises ``ValueError`` naming it."""
    return [rec for _, _, rec in read_records(path)]


def _read_json(path: Path):
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path.name}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if isinstance(data, list):
        for n, rec in enumerate(data, start=1):
            yield n, f"{path.name} record {n}", rec
    elif isinstance(data, dict) and not ({"messages", "conversations", "question", "Question", "text"} & set(data)) \
            and data and all(isinstance(v, dict) for v in data.values()):
        for key, rec in data.items():  # {id: record}, as the public MedVerse14k JSON
            yield str(key), f"{path.name} record {key!r}", rec
    elif isinstance(data, dict):
        yield 1, f"{path.name}", data
    else:
        raise ValueError(f"{path.name}: expected a JSON list or object of records, got {type(data).__name__}")


__all__ = ["Turns", "turns", "training_turns", "assistant_text", "user_text", "replace_assistant", "record_id",
           "read_records", "load_records", "write_jsonl"]
