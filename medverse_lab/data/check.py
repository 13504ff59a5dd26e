"""Check a curated MedVerse dataset: one row per problem, in a polars DataFrame.

    problems = ml.check_dataset("train.jsonl")     # or a list of records
    problems.filter(pl.col("severity") == "error")

Columns: ``sample_id`` (the record's ``id``, else its line or 1-based index), ``severity``
(``error`` or ``warning``), ``kind`` (see :data:`CHECK_KINDS`), ``step`` (the step id, when
one is concerned), ``offset`` (a character offset into the assistant turn, when known) and
``message``. The trace checks are :func:`~medverse_lab.parse_trace`'s own problems (tags,
unclosed blocks, outline grammar, dependencies, headers, planned-but-not-executed and the
reverse), with these on top: duplicated sections and tags out of place, empty steps, an
empty conclusion, a conclusion without an answer letter, a letter that is no option or
disagrees with the key (``answer_idx``, or ``answer``/``Goal`` as a letter, "C. text" or an
option's text), and (as a warning) plans with no parallelism.

Records are MedVerse14k-shaped (``messages`` with an ``assistant`` turn; ``conversations``
with ``from``/``value`` and a ChatML ``text`` work too), as the Curator writes them. The
input is never modified. ``medverse-lab check FILE`` prints a summary and exits 1 when
there are errors.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import PROBLEM_KINDS, PlanError
from ..format import STEP_HEADER
from .questions import normalize_options, parse_answer, parse_user_turn, resolve_key
from .records import assistant_text, read_records, record_id, user_text

#: every kind a row can have: parse_trace's problem kinds and the checker's own
CHECK_KINDS = {
    **PROBLEM_KINDS,
    "bad-record": "the record is not JSON or has no assistant turn",
    "duplicate-section": "a section tag (<Think>, <Plan>, <Execution>, <Conclusion>) appears twice",
    "stray-tag": "an <Outline> outside <Plan>, or a <Step> outside <Execution>",
    "empty-step": "a step block has no text after its header",
    "empty-conclusion": "the conclusion has no text",
    "no-answer": "the conclusion names no option letter ('Answer: X')",
    "answer-not-an-option": "the conclusion's letter is not one of the question's options",
    "answer-mismatch": "the conclusion's letter disagrees with the record's key",
    "bad-key": "the record's key (answer_idx / answer) is not one of its options, or its fields disagree",
    "no-parallelism": "no two steps of the plan can run at once (width 1)",
}
COLUMNS = ("sample_id", "severity", "kind", "step", "offset", "message")
_SECTIONS = ("Think", "Plan", "Execution", "Conclusion")
_STEP_RE = re.compile(r"<Step>(.*?)</Step>", re.DOTALL)


def _row(sample_id, kind, message, step=None, offset=None, severity="error") -> dict:
    assert kind in CHECK_KINDS, kind
    return {"sample_id": str(sample_id), "severity": severity, "kind": kind,
            "step": None if step is None else str(step), "offset": offset, "message": message}


def _options(record: dict) -> dict[str, str] | None:
    raw = record.get("options", record.get("Options"))
    if raw is None:
        user = user_text(record)
        raw = parse_user_turn(user)[1] if user else None
    try:
        return normalize_options(raw) if raw else None
    except ValueError:
        return None


def _structure(text: str, sid) -> list[dict]:
    """Duplicated sections and tags out of their section."""
    rows = []
    for name in _SECTIONS:
        opens = [m.start() for m in re.finditer(f"<{name}>", text)]
        if len(opens) > 1:
            rows.append(_row(sid, "duplicate-section", f"<{name}> appears {len(opens)} times; "
                             "only the first is read", offset=opens[1]))
    spans = {}
    for name in ("Plan", "Execution"):
        start = text.find(f"<{name}>")
        end = text.find(f"</{name}>", max(start, 0))
        spans[name] = (start, end if end >= 0 else len(text)) if start >= 0 else (-1, -1)
    for tag, section in (("<Outline>", "Plan"), ("<Step>", "Execution")):
        lo, hi = spans[section]
        for m in re.finditer(re.escape(tag), text):
            if not lo < m.start() < hi:
                rows.append(_row(sid, "stray-tag", f"{tag} outside <{section}>", offset=m.start()))
    return rows


def check_text(text: str, sample_id="?", key: str | None = None, options: dict | None = None) -> list[dict]:
    """Problem rows (dicts with the :data:`COLUMNS`) of one assistant turn, given the
    record's key letter and options when known."""
    from ..format import parse_trace

    rows = _structure(text, sample_id)
    trace = None
    try:
        trace = parse_trace(text)
    except PlanError as err:
        for p in err.problems:
            where = f" (line {p.line}, column {p.column})" if p.line is not None else ""
            rows.append(_row(sample_id, p.kind, p.message + where, p.step, p.offset))
    for m in _STEP_RE.finditer(text):
        header, _, body = m.group(1).partition("\n")
        if not body.strip():
            h = STEP_HEADER.match(header)
            rows.append(_row(sample_id, "empty-step", "step block has no text after its header",
                             h.group(1) if h else None, m.start()))
    if trace is not None:
        conclusion, at = trace.conclusion, text.rfind("<Conclusion>")
        tail = trace.suffix
        if trace.plan.width < 2:
            rows.append(_row(sample_id, "no-parallelism", f"the plan's {len(trace.plan)} step(s) run one at a "
                             "time (width 1): nothing is decoded in parallel", offset=text.find("<Plan>"),
                             severity="warning"))
    else:
        m = re.search(r"<Conclusion>(.*?)(?:</Conclusion>(.*)|$)", text, re.DOTALL)
        conclusion, at, tail = (m.group(1), m.start(), m.group(2) or "") if m else (None, None, "")
    if conclusion is not None:
        rows += _answer_rows(sample_id, conclusion, tail, at, key, options, text)
    return rows


def _answer_at(text: str, start: int | None, letter: str) -> int | None:
    """Where ``Answer: <letter>`` is written from ``start`` on (else ``start``): the place a
    wrong answer is marked."""
    m = re.compile(rf"Answer\s*[:：]?\s*\(?{re.escape(letter)}\b").search(text, start or 0)
    return m.start() if m else start


def _answer_rows(sid, conclusion: str, tail: str, at: int | None, key, options, text: str = "") -> list[dict]:
    if not conclusion.strip():
        return [_row(sid, "empty-conclusion", "the conclusion has no text", offset=at)]
    letter = parse_answer(conclusion) or parse_answer(tail)
    if letter is None:
        return [_row(sid, "no-answer", "the conclusion names no option letter ('Answer: X')",
                     offset=at, severity="warning")]
    if options and letter not in options:
        return [_row(sid, "answer-not-an-option", f"the conclusion answers {letter}, which is not one of "
                     f"the options {list(options)}", offset=_answer_at(text, at, letter))]
    if key is not None and letter != key:
        return [_row(sid, "answer-mismatch", f"the conclusion answers {letter} but the key is {key}",
                     offset=_answer_at(text, at, letter))]
    return []


def check_record(record, sample_id="?") -> list[dict]:
    """Problem rows of one record (see the module docstring)."""
    if not isinstance(record, dict):
        return [_row(sample_id, "bad-record", f"expected a JSON object, got {type(record).__name__}")]
    text = assistant_text(record)
    if text is None and ("question" in record or "Question" in record) and "options" in record:
        return [_row(sample_id, "bad-record", "a multiple-choice question, not a MedVerse record: it has no "
                     "reasoning to check; evaluate a model on it with `medverse-lab eval FILE`")]
    if text is None:
        return [_row(sample_id, "bad-record", "no assistant turn (expected 'messages' with an assistant "
                     "role, 'conversations', or a ChatML 'text')")]
    options, key, rows = _options(record), None, []
    fields = {"answer_idx": record.get("answer_idx"), "answer": record.get("answer", record.get("Goal"))}
    if any(v not in (None, "") for v in fields.values()):
        try:
            key = resolve_key(fields, options, "the record")
        except ValueError as exc:
            rows.append(_row(sample_id, "bad-key", str(exc)))
    return rows + check_text(text, sample_id, key, options)


def _records(source) -> Iterator[tuple[str, object]]:
    if isinstance(source, (str, Path)):
        for n, where, rec in read_records(source, errors="yield"):
            yield (str(n), rec) if isinstance(rec, Exception) else (record_id(rec, n), rec)
    elif isinstance(source, dict):
        yield record_id(source, 1), source
    else:
        for n, rec in enumerate(source, start=1):
            yield record_id(rec, n), rec


def check_records(source) -> tuple[list[dict], int]:
    rows, n = [], 0
    for sid, rec in _records(source):
        n += 1
        if isinstance(rec, Exception):
            rows.append(_row(sid, "bad-record", str(rec)))
        else:
            rows += check_record(rec, sid)
    return rows, n


def problems_frame(rows: list[dict]):
    """Problem rows (as :func:`check_record` gives them) as a polars DataFrame, one row each."""
    import polars as pl

    schema = {"sample_id": pl.String, "severity": pl.String, "kind": pl.String, "step": pl.String,
              "offset": pl.Int64, "message": pl.String}
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def check_dataset(source: str | Path | dict | Iterable[dict]):
    """Check MedVerse records: a ``.jsonl``/``.json`` path, a list of records or one record.

    Returns a polars DataFrame with one row per problem and the columns ``sample_id``,
    ``severity``, ``kind``, ``step``, ``offset``, ``message`` (empty when all is well).
    """
    return problems_frame(check_records(source)[0])


def summary(problems, n_samples: int, show: int = 20) -> str:
    """A short text report of a problems table: counts per kind and severity, and the
    first ``show`` samples with errors."""
    import polars as pl

    errors = problems.filter(pl.col("severity") == "error")
    bad = errors["sample_id"].unique(maintain_order=True).to_list()
    warned = problems.filter(pl.col("severity") == "warning")["sample_id"].n_unique()
    lines = [f"checked {n_samples} samples: {len(bad)} with errors, {warned} with warnings"]
    if problems.height:
        counts = (problems.group_by("severity", "kind")
                  .agg(pl.len().alias("rows"), pl.col("sample_id").n_unique().alias("samples"))
                  .sort("severity", "rows", descending=[False, True]))
        lines.append(f"  {'severity':<8}  {'kind':<22} {'rows':>6} {'samples':>8}")
        lines += [f"  {r['severity']:<8}  {r['kind']:<22} {r['rows']:>6} {r['samples']:>8}"
                  for r in counts.iter_rows(named=True)]
    if bad:
        more = f" (and {len(bad) - show} more)" if len(bad) > show else ""
        lines.append(f"samples with errors: {', '.join(bad[:show])}{more}")
    if problems.height:  # each problem's reason, as the table has it
        lines.append("problems:")
        for r in problems.head(show).iter_rows(named=True):
            where = f" step {r['step']}" if r["step"] else ""
            lines.append(f"  {r['sample_id']}{where}: {r['severity']} {r['kind']}: {r['message']}")
        if problems.height > show:
            lines.append(f"  ... and {problems.height - show} more (--out FILE writes them all)")
    return "\n".join(lines)


def write_table(problems, path: str | Path) -> Path:
    """Write a problems table by suffix: ``.csv``, ``.parquet``, ``.jsonl``/``.ndjson`` or ``.json``."""
    path = Path(path)
    writers = {".csv": problems.write_csv, ".parquet": problems.write_parquet,
               ".jsonl": problems.write_ndjson, ".ndjson": problems.write_ndjson, ".json": problems.write_json}
    if path.suffix not in writers:
        raise ValueError(f"--out {path}: unknown table format {path.suffix!r}; use one of {sorted(writers)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    writers[path.suffix](path)
    return path
