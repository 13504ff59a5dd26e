"""Reading and writing record files (JSONL, JSON) with errors that name the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator


def write_jsonl(records: Iterable[dict], path: str | Path) -> Path:
    """Write records one JSON object per line (UTF-8, parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
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


def _read_json(path: Path):
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path.name}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if isinstance(data, list):
        for n, rec in enumerate(data, start=1):
            yield n, f"{path.name} record {n}", rec
    elif isinstance(data, dict) and not ({"messages", "question", "Question", "text"} & set(data)) \
            and data and all(isinstance(v, dict) for v in data.values()):
        for key, rec in data.items():  # {id: record}, as the public MedVerse14k JSON
            yield str(key), f"{path.name} record {key!r}", rec
    elif isinstance(data, dict):
        yield 1, f"{path.name}", data
    else:
        raise ValueError(f"{path.name}: expected a JSON list or object of records, got {type(data).__name__}")
