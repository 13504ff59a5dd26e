"""Static pictures of what the widgets show, for notebooks read without their kernel.

A widget's view lives only as long as its kernel. GitHub, nbviewer, nbconvert's HTML and
JupyterLab opening a notebook it does not trust draw the other representations of the
output instead, so every widget writes, beside its view, an HTML picture of its state:
the plan's Petri net, the run's lanes and answer, the mask, the dataset table. The
pictures use inline styles only (the reader has no ``widgets.css``) and colours that read
on light and dark backgrounds; every text from a model or a user is escaped.
"""

from __future__ import annotations

import base64
import io
from html import escape

import numpy as np

from ..modes import Mode
from ._shared import unpack_bits

#: the classes of the picture's outer element: ``widgets.css`` hides it while the live view
#: is drawn in the same output area (see ``.mv-picture`` there)
PICTURE_CLASS = "mv-picture"
_FRAME = ("font-family: system-ui, sans-serif; font-size: 13px; border: 1px solid rgba(127,127,127,.5); "
          "border-radius: 4px; padding: 8px 10px; max-width: 100%; overflow-x: auto;")
_MUTED = "opacity: .7;"
_BLUE, _GREEN, _RED, _AMBER = "#3b82f6", "#16a34a", "#dc2626", "#d97706"


def frame(name: str, body: str) -> str:
    """``body`` under a caption naming the widget and how to bring it back."""
    caption = (f'<div style="{_MUTED} font-size: 12px; margin-bottom: 6px;">{escape(name)}: a picture saved '
               "with the notebook. Run the cell to use the widget.</div>")
    return f'<div class="{PICTURE_CLASS}" style="{_FRAME}">{caption}{body}</div>'


def _text(value, style: str = "") -> str:
    return f'<div style="{style}">{escape(str(value))}</div>' if value else ""


# ----- plan -------------------------------------------------------------------------------
_COL, _ROW, _PAD, _BOX_W, _BOX_H, _R = 125, 66, 34, 150, 44, 14


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def back_arc_path(x1: float, y1: float, x2: float, y2: float, below: float) -> str:
    """An arc that goes back (its target is not right of its source), routed under the
    drawing at height ``below`` so it crosses no box or label."""
    return (f"M{x1},{y1} C{x1 + 40},{y1} {x1 + 40},{below} {x1},{below} L{x2},{below} "
            f"C{x2 - 40},{below} {x2 - 40},{y2} {x2},{y2}")


def plan_svg(graph: dict, problems: dict[str, list[str]] | None = None, selected: str = "") -> str:
    """The Petri net of :func:`~medverse_lab.widgets.petri_layout` as an SVG string: boxes
    for the steps (red when the step has a problem), circles for the places."""
    nodes = graph.get("nodes") or []
    if not nodes:
        return _text("(no steps)", _MUTED)
    problems = problems or {}
    x = lambda col: _PAD + col * _COL  # noqa: E731
    y = lambda row: _PAD + row * _ROW  # noqa: E731
    half = lambda n: _BOX_W / 2 if n["kind"] == "transition" else _R  # noqa: E731
    by_key = {n["key"]: n for n in nodes}
    bottom = y(max(graph.get("rows", 1) - 1, 0)) + _BOX_H / 2
    backs = sum(1 for a in graph.get("arcs", []) if a.get("back"))
    width = x(max(graph.get("cols", 1) - 1, 0)) + _PAD + _BOX_W / 2
    height = bottom + _PAD + 12 * backs
    parts = []
    back = 0
    for arc in graph.get("arcs", []):
        a, b = by_key.get(arc["from"]), by_key.get(arc["to"])
        if a is None or b is None:
            continue
        x1, y1, x2, y2 = x(a["col"]) + half(a), y(a["row"]), x(b["col"]) - half(b) - 2, y(b["row"])
        if arc.get("back"):
            back += 1
            d = back_arc_path(x1, y1, x2, y2, bottom + 10 + 12 * back)
            colour = _RED
        else:
            c = max(abs(x2 - x1) / 2, 40)
            d = f"M{x1},{y1} C{x1 + c},{y1} {x2 - c},{y2} {x2},{y2}"
            colour = "currentColor"
        parts.append(f'<path d="{d}" fill="none" stroke="{colour}" stroke-opacity=".6" stroke-width="1.5"/>'
                     f'<polygon points="{x2},{y2} {x2 - 8},{y2 - 4} {x2 - 8},{y2 + 4}" fill="{colour}" '
                     'fill-opacity=".6"/>')
    for n in nodes:
        cx, cy = x(n["col"]), y(n["row"])
        if n["kind"] == "place":
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="{_R}" fill="none" stroke="currentColor" '
                         'stroke-opacity=".6"/>')
            if n.get("step") is None:
                parts.append(f'<text x="{cx}" y="{cy + _R + 13}" text-anchor="middle" font-size="11" '
                             'fill="currentColor">source</text>')
            continue
        sid = str(n["step"])
        bad = sid in problems
        stroke = _RED if bad else (_BLUE if sid == selected else "currentColor")
        title = "\n".join([f"Step {sid}: {n.get('description', '')}"] + problems.get(sid, []))
        parts.append(
            f'<g><title>{escape(title)}</title>'
            f'<rect x="{cx - _BOX_W / 2}" y="{cy - _BOX_H / 2}" width="{_BOX_W}" height="{_BOX_H}" rx="4" '
            f'fill="{_RED if bad else _BLUE}" fill-opacity=".12" stroke="{stroke}" stroke-opacity=".8"/>'
            f'<text x="{cx - _BOX_W / 2 + 8}" y="{cy - 5}" font-weight="bold" font-size="12" '
            f'fill="currentColor">Step {escape(sid)}{" !" if bad else ""}</text>'
            f'<text x="{cx - _BOX_W / 2 + 8}" y="{cy + 12}" font-size="11" fill="currentColor">'
            f'{escape(_clip(str(n.get("description", "")), 22))}</text></g>')
    # its own light ground and ink: as an image it inherits no colour from the page
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" style="color: #222; background: #fff;">{"".join(parts)}</svg>')


def plan_picture(graph: dict, errors: list[dict], notice: str = "", warning: str = "", selected: str = "") -> str:
    """What a :class:`PlanEditor` shows: the net, its validity and its problems."""
    problems: dict[str, list[str]] = {}
    for p in errors:
        if p.get("step") is not None:
            problems.setdefault(str(p["step"]), []).append(p["message"])
    status = (f'<div style="color: {_GREEN};">Valid plan</div>' if not errors else
              f'<div style="color: {_RED};">{len(errors)} problem{"s" if len(errors) != 1 else ""}:</div>'
              '<ul style="margin: 2px 0 0 18px; padding: 0;">'
              + "".join(f"<li>{escape(p['message'])}</li>" for p in errors) + "</ul>")
    # an <img>, not inline SVG: HTML sanitizers (JupyterLab's for untrusted notebooks) drop
    # inline <svg> but keep data images, and an SVG image runs no script
    svg = base64.b64encode(plan_svg(graph, problems, selected).encode("utf-8")).decode("ascii")
    steps = sum(1 for n in graph.get("nodes") or [] if n["kind"] == "transition")
    image = (f'<img alt="Petri net of the plan, {steps} steps" src="data:image/svg+xml;base64,{svg}" '
             'style="max-width: 100%; border-radius: 3px;"/>') if steps else _text("(no steps)", _MUTED)
    return (_text(warning, f"color: {_AMBER}; white-space: pre-wrap; margin-bottom: 4px;")
            + _text(notice, _MUTED) + image + status)


# ----- run --------------------------------------------------------------------------------
def run_picture(question: str, lanes: list[dict], summary: dict, notice: str = "") -> str:
    """What a :class:`RunViewer` shows: the question, the outcome, one row per branch with
    its span on the timeline of forward calls, and its text."""
    if not lanes:
        return _text(question, "white-space: pre-wrap;") + _text(notice or "No run yet.", _MUTED)
    warnings = summary.get("warnings") or []
    if summary.get("answer"):
        outcome = f"Answer {summary['answer']}"
    else:
        outcome = summary.get("answer_note") or "No answer"
    head = (f'<div style="font-weight: bold; color: {_AMBER if warnings or not summary.get("answer") else "inherit"};">'
            f'{escape(outcome)}</div>'
            f'<div style="{_MUTED}">mode {escape(str(summary.get("mode", "")))} · seed {escape(str(summary.get("seed", "")))}'
            f' · {summary.get("calls", 0)} forward calls · speedup {summary.get("call_speedup", "")}x in forward calls</div>')
    head += "".join(_text(f"⚠ {w}", f"color: {_AMBER};") for w in warnings)
    calls = max(int(summary.get("calls") or 1), 1)
    critical = set(summary.get("critical_path") or [])
    rows = []
    for lane in lanes:
        left = 100 * lane.get("first_call", 0) / calls
        span = max(100 * (lane.get("last_call", 0) - lane.get("first_call", 0) + 1) / calls, 0.5)
        weight = "bold" if lane.get("branch") in critical else "normal"
        rows.append(
            '<tr style="vertical-align: top;">'
            f'<td style="padding: 3px 8px 3px 0; font-weight: {weight}; white-space: nowrap;">'
            f'{escape(_clip(str(lane.get("label", "")), 48))}</td>'
            f'<td style="padding: 3px 8px 3px 0; white-space: nowrap; {_MUTED}">{lane.get("tokens", 0)} tok</td>'
            '<td style="padding: 3px 0; width: 100%;">'
            '<div style="position: relative; height: 6px; background: rgba(127,127,127,.15); margin: 5px 0;">'
            f'<div style="position: absolute; left: {left:.1f}%; width: {span:.1f}%; height: 6px; '
            f'background: {_BLUE};"></div></div>'
            f'<div style="white-space: pre-wrap; font-family: monospace; font-size: 12px;">'
            f'{escape(str(lane.get("text", "")))}</div></td></tr>')
    return (_text(question, "white-space: pre-wrap; margin-bottom: 6px;") + head + _text(notice, _MUTED)
            + f'<table style="border-collapse: collapse; width: 100%; margin-top: 6px;">{"".join(rows)}</table>')


# ----- mask -------------------------------------------------------------------------------
_SEGMENT_RGB = [(59, 130, 246), (22, 163, 74), (217, 119, 6), (147, 51, 234), (219, 39, 119), (13, 148, 136)]


def mask_png(mask: np.ndarray, segments: list[dict], side: int = 360) -> bytes:
    """The boolean ``mask`` (rows: queries, columns: keys) as a PNG: a visible cell in its
    query segment's colour, hidden cells transparent, scaled to about ``side`` pixels."""
    from PIL import Image

    T = mask.shape[0]
    rgba = np.zeros((T, T, 4), dtype=np.uint8)
    for i, seg in enumerate(segments):
        r, g, b = _SEGMENT_RGB[i % len(_SEGMENT_RGB)]
        rows = slice(seg["start"], seg["stop"])
        rgba[rows, :, :3] = (r, g, b)
    rgba[..., 3] = np.where(mask, 255, 0)
    scale = max(1, side // max(T, 1))
    image = Image.fromarray(rgba, "RGBA")
    if scale > 1:
        image = image.resize((T * scale, T * scale), Image.NEAREST)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def mask_picture(T: int, packed: bytes, segments: list[dict], mode: Mode, notice: str = "") -> str:
    """What a :class:`MaskInspector` shows: the mask of ``mode`` and its segments' colours."""
    if not T:
        return _text("(empty layout)", _MUTED)
    mask = unpack_bits(packed, (T, T)).numpy()
    png = base64.b64encode(mask_png(mask, segments)).decode("ascii")
    legend = "".join(
        f'<span style="white-space: nowrap; margin-right: 10px;"><span style="display: inline-block; width: 10px; '
        f'height: 10px; background: rgb{_SEGMENT_RGB[i % len(_SEGMENT_RGB)]};"></span> '
        f'{escape(str(seg["branch"]))} ({seg["start"]}–{seg["stop"] - 1})</span>'
        for i, seg in enumerate(segments))
    return (f'<div style="margin-bottom: 4px;">mode <b>{escape(mode)}</b>: {T} tokens, rows attend to the coloured '
            "columns (query segment's colour)</div>" + _text(notice, _MUTED)
            + f'<img alt="attention mask, mode {escape(mode)}" src="data:image/png;base64,{png}" '
            'style="image-rendering: pixelated; width: 360px; max-width: 100%; border: 1px solid rgba(127,127,127,.5);"/>'
            f'<div style="font-size: 12px; margin-top: 4px;">{legend}</div>')


# ----- dataset ----------------------------------------------------------------------------
def table_picture(columns: dict, visible: list[int], filter_text: str = "", notice: str = "",
                  limit: int = 40) -> str:
    """What a dataset table shows: the records the filter leaves (the first ``limit``)."""
    ids = columns.get("id", [])
    head = f'<div style="margin-bottom: 4px;">{len(visible)} of {len(ids)} records{escape(filter_text)}</div>'
    if not visible:
        return head + _text(notice, _MUTED) + _text("No records with this problem.", _MUTED)
    cells = "padding: 2px 10px 2px 0; text-align: left;"
    rows = []
    for i in visible[:limit]:
        errors, warnings = columns["errors"][i], columns["warnings"][i]
        colour = _RED if errors else (_AMBER if warnings else "inherit")
        rows.append(f'<tr><td style="{cells}">{escape(str(ids[i]))}</td><td style="{cells}">{columns["steps"][i]}</td>'
                    f'<td style="{cells}">{columns["width"][i]}</td>'
                    f'<td style="{cells} color: {colour};">{errors} / {warnings}</td>'
                    f'<td style="{cells}">{escape(", ".join(columns["kinds"][i]))}</td></tr>')
    more = _text(f"… and {len(visible) - limit} more", _MUTED) if len(visible) > limit else ""
    header = "".join(f'<th style="{cells}">{h}</th>' for h in ("record", "steps", "width", "errors / warnings",
                                                                 "problems"))
    return (head + _text(notice, _MUTED) + f'<table style="border-collapse: collapse; font-size: 12px;">'
            f"<thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>" + more)
