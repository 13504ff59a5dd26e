"""DatasetBrowser: find, read, fix and save the broken records of a curated dataset.

    browser = ml.DatasetBrowser("train.jsonl")      # or a list of records
    browser.kind = "forward-dependency"              # filter; browser.search = "sepsis"
    browser.select(12)                               # its text, problems marked; its plan; its mask
    browser.fix_text(12, new_text)                   # or edit the plan in browser.editor
    browser.save("train.fixed.jsonl")

The table (:class:`RecordTable`, an anywidget) gets the whole dataset once as JSON columns
and, after every filter or search (done in Python with polars), the matching record
indices as int32 bytes; it draws only the rows in view, so 14,000 records stay fluid.
Selecting a record shows its assistant turn with each problem's span marked (as text,
never HTML), loads its plan into a :class:`PlanEditor` and its mask into a
:class:`MaskInspector`. An edit of the plan or of the text re-checks the record at once.
"""

from __future__ import annotations

import json
import re
from html import escape
from pathlib import Path

import ipywidgets as w
import polars as pl
import traitlets as t

from ..data.check import CHECK_KINDS, check_record
from ..data.records import assistant_text, load_records, record_id, replace_assistant, write_jsonl
from ..plan import Plan, parse_outline
from ._shared import STATIC, LiveView, SavedPicture, int32_bytes
from .mask_inspector import MaskInspector
from .picture import plan_picture, table_picture
from .plan_editor import PlanEditor

_PLAN_RE = re.compile(r"(<Plan>)(.*?)(</Plan>)", re.DOTALL)
_HEADER_RE = re.compile(r"(<Step>\s*Transient Step\s+)(\d+)(\s*:\s*)([^\n]*)", re.IGNORECASE)


def plan_draft(text: str) -> Plan:
    """The plan a record's text declares, read leniently (it may be invalid)."""
    m = _PLAN_RE.search(text)
    return Plan(parse_outline(m.group(2))[0] if m else [])


def with_plan(text: str, plan: Plan) -> str:
    """``text`` with its ``<Plan>`` section rewritten from ``plan`` and every step header
    naming the plan's description of that step."""
    m = _PLAN_RE.search(text)
    if m is None:
        return text
    outline = plan.to_outline() if len(plan) else ""
    text = text[:m.start(2)] + f"\n{outline}\n" + text[m.end(2):]
    described = {s.id: s.description for s in plan.steps}

    def header(h):
        sid = h.group(2)
        return h.group(1) + sid + h.group(3) + described[sid] if sid in described else h.group(0)

    return _HEADER_RE.sub(header, text)


def _spans(text: str, rows: list[dict]) -> list[dict]:
    """Where each problem is in ``text``: from its offset to the end of that line."""
    out = []
    for r in rows:
        at = r.get("offset")
        if at is None or not 0 <= at <= len(text):
            continue
        end = text.find("\n", at)
        end = len(text) if end < 0 else max(end, at + 1)
        out.append({"start": at, "end": min(end, len(text)), "kind": r["kind"], "severity": r["severity"],
                    "message": r["message"], "step": r["step"]})
    return sorted(out, key=lambda s: (s["start"], s["end"]))


class RecordTable(LiveView):
    """The table and the record view of a :class:`DatasetBrowser` (the browser owns it)."""

    _esm = STATIC / "dataset_browser.js"

    #: the dataset by columns: id, steps, width, errors, warnings, kinds, key, fixed
    columns = t.Dict().tag(sync=True)
    #: the record indices that pass the filter and the search, as int32 bytes
    visible = t.Bytes(b"").tag(sync=True)
    n_visible = t.Int(0).tag(sync=True)
    #: problem kinds present, with their record counts: [[kind, n], ...]
    kinds = t.List().tag(sync=True)
    kind = t.Unicode("").tag(sync=True)      # "" all, "any" any error, or a kind
    search = t.Unicode("").tag(sync=True)
    selected = t.Int(-1).tag(sync=True)
    #: the selected record's assistant turn and its problems (spans hold offsets into it)
    text = t.Unicode("").tag(sync=True)
    spans = t.List().tag(sync=True)
    problems = t.List().tag(sync=True)
    notice = t.Unicode("").tag(sync=True)
    #: the last Save as from the view, shown by its button: ``{"kind": "ok" | "exists" | "error",
    #: "message", "path", "n"}`` (``exists``: the view offers to overwrite; ``n`` counts attempts)
    save_status = t.Dict().tag(sync=True)


class DatasetBrowser(SavedPicture, w.VBox):
    """Browse a curated MedVerse dataset, see every problem where it is, fix, save.

    ``source`` is a JSONL path or a list of records (MedVerse14k-shaped, as the Curator
    writes them). Attributes: ``table`` (the table view), ``editor`` (a PlanEditor of the
    selected record's plan), ``inspector`` (a MaskInspector of its mask, once its trace
    parses), ``records`` (current records, fixes applied), ``fixed`` (indices changed).
    Filter with ``kind`` and ``search``; ``problems_of(i)`` lists a record's problems.
    """

    def __init__(self, source, tokenizer=None, **kwargs):
        if isinstance(source, (str, Path)):
            self.path = Path(source).resolve()
            self.records = load_records(self.path)
        else:
            self.path = None
            self.records = list(source)
        if not self.records:
            raise ValueError("the dataset is empty: nothing to browse")
        self._tokenizer = tokenizer
        self.fixed: set[int] = set()
        self._problems = [check_record(r, record_id(r, i + 1)) for i, r in enumerate(self.records)]
        self._frame = self._build_frame()
        self.table = RecordTable()
        self.editor = PlanEditor()
        self.inspector: MaskInspector | None = None
        self._mask_box = w.VBox([w.HTML("<i>Select a record: its mask shows here once its trace parses.</i>")])
        self._loading = False
        tabs = w.Tab(children=[self.editor, self._mask_box])
        tabs.set_title(0, "Plan")
        tabs.set_title(1, "Mask")
        with self.table.hold_sync():
            self.table.columns = self._columns()
            self.table.kinds = self._kind_counts()
            self._filter()
        self.table.observe(self._filter, names=["kind", "search"])
        self.table.observe(self._on_select, names="selected")
        self.table.on_msg(self._on_frontend_msg)
        self.editor.observe(self._on_plan_edit, names="draft")
        super().__init__(children=[self.table, tabs], **kwargs)

    def picture(self) -> str:
        table = self.table
        shown = f" with problem {table.kind!r}" if table.kind not in ("", "any") else (
            " with errors" if table.kind == "any" else "")
        shown += f" matching {table.search!r}" if table.search else ""
        parts = [table_picture(table.columns, self.visible, shown, table.notice)]
        if table.selected >= 0:
            rec = self.records[table.selected]
            parts.append(f"<h4>Record {escape(record_id(rec, table.selected + 1))}</h4>"
                         + plan_picture(self.editor.graph, self.editor.errors))
        return "".join(parts)

    def _picture_sources(self) -> list:
        return [self.table, self.editor]

    # ----- the table -------------------------------------------------------------------
    def _summary(self, i: int) -> dict:
        rec, rows = self.records[i], self._problems[i]
        text = assistant_text(rec) if isinstance(rec, dict) else None
        plan = plan_draft(text or "")
        try:  # a DAG in the wrong order still has a width: read it from the plan renumbered
            width = 0 if not len(plan) else plan.width if plan.is_valid else plan.renumbered().width
        except Exception:  # noqa: BLE001 - not a DAG (a cycle, a missing step): no width
            width = 0
        return {"id": record_id(rec, i + 1), "steps": len(plan), "width": width,
                "errors": sum(r["severity"] == "error" for r in rows),
                "warnings": sum(r["severity"] == "warning" for r in rows),
                "kinds": sorted({r["kind"] for r in rows}),
                "key": str(rec.get("answer_idx") or "") if isinstance(rec, dict) else "",
                "search": " ".join(filter(None, [record_id(rec, i + 1), text or "",
                                                 json.dumps(rec.get("messages", ""), ensure_ascii=False)[:2000]
                                                 if isinstance(rec, dict) else ""])).lower()}

    def _build_frame(self) -> pl.DataFrame:
        rows = [self._summary(i) for i in range(len(self.records))]
        return pl.DataFrame(rows, schema={"id": pl.String, "steps": pl.Int32, "width": pl.Int32, "errors": pl.Int32,
                                          "warnings": pl.Int32, "kinds": pl.List(pl.String), "key": pl.String,
                                          "search": pl.String}).with_row_index("index")

    def _columns(self) -> dict:
        f = self._frame
        return {c: f[c].to_list() for c in ("id", "steps", "width", "errors", "warnings", "kinds", "key")} | {
            "fixed": sorted(self.fixed)}

    def _kind_counts(self) -> list:
        counts = self._frame.explode("kinds").drop_nulls("kinds").group_by("kinds").len().sort("kinds")
        return [[k, n] for k, n in counts.iter_rows()]

    def _filter(self, _change=None) -> None:
        f, kind, needle = self._frame, self.table.kind, self.table.search.strip().lower()
        if kind == "any":
            f = f.filter(pl.col("errors") > 0)
        elif kind:
            f = f.filter(pl.col("kinds").list.contains(kind))
        if needle:
            f = f.filter(pl.col("search").str.contains(needle, literal=True))
        idx = f["index"].to_list()
        with self.table.hold_sync():
            self.table.visible = int32_bytes(idx)
            self.table.n_visible = len(idx)

    # ----- public API --------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.table.kind

    @kind.setter
    def kind(self, value: str) -> None:
        if value not in ("", "any") and value not in CHECK_KINDS:
            raise ValueError(f"unknown problem kind {value!r}; kinds are {', '.join(CHECK_KINDS)}")
        self.table.kind = value

    @property
    def search(self) -> str:
        return self.table.search

    @search.setter
    def search(self, value: str) -> None:
        self.table.search = value

    @property
    def visible(self) -> list[int]:
        """Indices of the records the filter and search leave, in order."""
        import torch

        data = self.table.visible
        return torch.frombuffer(bytearray(data), dtype=torch.int32).tolist() if data else []

    @property
    def selected(self) -> int:
        return self.table.selected

    def select(self, index: int) -> None:
        """Show record ``index``: text with problems marked, plan, mask."""
        if not 0 <= index < len(self.records):
            raise IndexError(f"record {index} is outside the dataset (0..{len(self.records) - 1})")
        if self.table.selected == index:
            self._show(index)
        self.table.selected = index

    def problems_of(self, index: int) -> pl.DataFrame:
        """The problems of record ``index`` now (after any fix), one row each."""
        from ..data.check import problems_frame

        return problems_frame(self._problems[index])

    def text_of(self, index: int) -> str:
        return assistant_text(self.records[index]) or ""

    def fix_text(self, index: int, text: str) -> pl.DataFrame:
        """Replace record ``index``'s assistant turn with ``text`` and re-check it; returns
        its problems now."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the new text is empty")
        self.records[index] = replace_assistant(self.records[index], text)
        self.fixed.add(index)
        self._recheck(index)
        return self.problems_of(index)

    def fix_plan(self, index: int, plan: Plan) -> pl.DataFrame:
        """Rewrite record ``index``'s plan (and its step headers) from ``plan``; re-check."""
        return self.fix_text(index, with_plan(self.text_of(index), plan))

    def save(self, path, overwrite: bool = False) -> Path:
        """Write every record, fixed ones replaced, as JSONL to ``path``. Refuses the input
        file always, and any existing file unless ``overwrite``."""
        path = Path(path).resolve()
        if self.path is not None and path == self.path:
            raise ValueError(f"{path} is the dataset being browsed; save the fixed records to a new file")
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        write_jsonl(self.records, path)
        self.table.notice = f"saved {len(self.records)} records ({len(self.fixed)} fixed) to {path.name}"
        return path

    # ----- reacting ------------------------------------------------------------------------
    def _recheck(self, index: int) -> None:
        rec = self.records[index]
        self._problems[index] = check_record(rec, record_id(rec, index + 1))
        s = self._summary(index)
        self._frame = self._frame.with_columns(
            *(pl.when(pl.col("index") == index).then(pl.lit(s[c], dtype=self._frame.schema[c])).otherwise(pl.col(c))
              .alias(c) for c in ("steps", "width", "errors", "warnings", "kinds", "search")))
        with self.table.hold_sync():
            self.table.columns = self._columns()
            self.table.kinds = self._kind_counts()
            self._filter()
            if self.table.selected == index:
                self._show(index, reload_plan=False)
        n = sum(r["severity"] == "error" for r in self._problems[index])
        self.table.notice = f"record {record_id(rec, index + 1)} re-checked: " + (f"{n} errors" if n else "no errors")

    def _on_select(self, change) -> None:
        if change["new"] >= 0:
            self._show(change["new"])

    def _show(self, index: int, reload_plan: bool = True) -> None:
        text = self.text_of(index)
        rows = self._problems[index]
        with self.table.hold_sync():
            self.table.text = text
            self.table.spans = _spans(text, rows)
            self.table.problems = [{k: r[k] for k in ("kind", "severity", "step", "offset", "message")} for r in rows]
        if reload_plan:
            self._loading = True
            try:
                self.editor.load(plan_draft(text))
            finally:
                self._loading = False
        self._show_mask(text)

    def _show_mask(self, text: str) -> None:
        from ..errors import LayoutError, PlanError
        from ..format import parse_trace

        try:
            layout = _layout(parse_trace(text), self._tokenizer)
        except (PlanError, LayoutError, ValueError) as exc:
            self._mask_box.children = [w.Label(f"No mask: the trace does not parse yet ({str(exc).splitlines()[0]})")]
            return
        if self.inspector is None:
            self.inspector = MaskInspector(layout)
        else:
            self.inspector.show(layout)
        self._mask_box.children = [self.inspector]

    def _on_plan_edit(self, _change) -> None:
        index = self.table.selected
        if self._loading or index < 0:
            return
        self.fix_plan(index, self.editor.draft_plan)

    def _on_frontend_msg(self, _widget, content, _buffers) -> None:
        if not isinstance(content, dict):
            return
        try:
            if content.get("type") == "fix_text":
                self.fix_text(int(content["index"]), str(content["text"]))
            elif content.get("type") == "save":
                self._save_from_view(str(content["path"]), bool(content.get("overwrite")))
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            self.table.notice = str(exc)

    def _save_from_view(self, path: str, overwrite: bool) -> None:
        """Save as asked by the view; the outcome goes next to its button."""
        status = {"path": path, "n": self.table.save_status.get("n", 0) + 1}
        try:
            self.save(path, overwrite=overwrite)
        except FileExistsError:
            status.update(kind="exists", message=f"{Path(path).name} exists. Overwrite it?")
        except (ValueError, OSError) as exc:
            status.update(kind="error", message=f"not saved: {exc}")
        else:
            status.update(kind="ok", message=self.table.notice)
        self.table.save_status = status


def _layout(trace, tokenizer):
    """The token layout of ``trace`` with ``tokenizer`` (default: the teaching model's)."""
    from ..layout import Layout

    if tokenizer is None:
        tokenizer = _default_tokenizer()
    return Layout.from_trace(trace, tokenizer)


_TOKENIZER = None


def _default_tokenizer():
    global _TOKENIZER
    if _TOKENIZER is None:
        from transformers import AutoTokenizer

        from ..engine.engine import ASSET_DIR

        _TOKENIZER = AutoTokenizer.from_pretrained(ASSET_DIR, local_files_only=True)
    return _TOKENIZER
