"""MaskInspector in a real JupyterLab: the canvas shows the mask and the diff, hovering
names the tokens, a click explains the cell (read back from the kernel), the mode
selector reaches Python, 4096 tokens stay quick, token text stays text, two views."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.browser

BAND, M, GAP, STRIP, AXIS, RIGHT = 18, 560, 8, 64, 22, 48  # as in widgets/src/mask_inspector.js

SETUP = """\
import json
import medverse_lab as ml
plan = ml.Plan([ml.Step("1", "a"), ml.Step("2", "b"), ml.Step("3", "c", ["1", "2"]), ml.Step("4", "d", ["1"]),
                ml.Step("5", "e", ["3"])])
layout = ml.Layout.from_plan(plan, prefix_len=4, step_lens={"1": 3, "2": 4, "3": 2, "4": 3, "5": 3},
                             conclusion_len=3, separator_lens=1)
mi = ml.MaskInspector(layout, mode="layered", diff="medverse-sft")
mi"""
STATE = "print(json.dumps({'mode': mi.mode, 'diff': mi.diff_mode, 'explanation': mi.explanation}))"
T = 22
CELL = M // T


def cell_xy(q, k, cell=CELL):
    return BAND + k * cell + cell // 2, BAND + q * cell + cell // 2


def pixel(view, x, y):
    return view.locator("canvas.mv-matrix").evaluate(
        f"c => Array.from(c.getContext('2d').getImageData({x}, {y}, 1, 1).data.slice(0, 3))")


def dominant(view, x, y, r=4):
    """The most common colour in the (2r)^2 pixels around (x, y): segment lines excluded."""
    data = view.locator("canvas.mv-matrix").evaluate(
        f"c => Array.from(c.getContext('2d').getImageData({x - r}, {y - r}, {2 * r}, {2 * r}).data)")
    colours = [tuple(data[i:i + 3]) for i in range(0, len(data), 4)]
    return list(max(set(colours), key=colours.count))


def css_rgb(page, var):
    return page.evaluate(f"""() => {{
        const c = document.createElement('canvas'); c.width = c.height = 1;
        const x = c.getContext('2d');
        x.fillStyle = getComputedStyle(document.querySelector('.mv-mask-inspector')).getPropertyValue('{var}').trim();
        x.fillRect(0, 0, 1, 1); return Array.from(x.getImageData(0, 0, 1, 1).data.slice(0, 3)); }}""")


def state(nb, cell):
    return json.loads(nb.run(cell).strip().splitlines()[-1])


def test_mask_diff_hover_click_and_mode(notebook, artifacts):
    nb = notebook([SETUP, STATE, STATE])
    nb.run(0)
    view = nb.panel.locator(".mv-mask-inspector")
    view.locator("canvas.mv-matrix").wait_for()
    nb.page.wait_for_function("document.querySelector('.mv-mask-inspector').dataset.draws >= 1")
    assert "cells differ between layered and medverse-sft" in view.locator(".mv-caption").inner_text()

    # step 2's first token (q 8) and step 1's separator (k 6): hidden in layered, seen in medverse-sft
    q, k = 8, 6
    page = nb.page
    assert pixel(view, *cell_xy(q, k)) == css_rgb(page, "--jp-error-color1")      # only medverse-sft
    assert pixel(view, *cell_xy(q, 0)) == css_rgb(page, "--jp-brand-color1")     # the prefix: both see it
    assert pixel(view, *cell_xy(0, 5)) == css_rgb(page, "--jp-layout-color2")    # the causal future

    box = view.locator("canvas.mv-overlay").bounding_box()
    x, y = cell_xy(q, k)
    page.mouse.move(box["x"] + x, box["y"] + y)
    hover = view.locator(".mv-hover").inner_text()
    assert hover.startswith("q 8 (step 2") and "cannot see k 6 (step 1" in hover and "differs" in hover
    page.mouse.click(box["x"] + x, box["y"] + y)
    page.wait_for_function("document.querySelector('.mv-mask-inspector .mv-explain').textContent.includes('[chunk-sibling]')")
    text = view.locator(".mv-explain").inner_text()
    assert "q 8 (step 2, pos 5) CANNOT see k 6 (step 1, pos 6)" in text and "medverse-sft: CAN [separator]" in text
    s = state(nb, 1)
    assert (s["explanation"]["q"], s["explanation"]["k"], s["explanation"]["allowed"]) == (8, 6, False)
    view.screenshot(path=str(artifacts / "mask_inspector-light.png"))

    view.locator("select.mv-mode").select_option("dag")
    view.locator("select.mv-diff").select_option("")
    page.wait_for_function("document.querySelector('.mv-mask-inspector').dataset.mode === 'dag'")
    s = state(nb, 2)
    assert (s["mode"], s["diff"]) == ("dag", "")
    # step 4 (q 15) does not descend from step 2 (k 7) in dag
    page.wait_for_timeout(300)
    assert pixel(view, *cell_xy(15, 7)) == css_rgb(page, "--jp-layout-color2")
    assert pixel(view, *cell_xy(15, 4)) == css_rgb(page, "--jp-brand-color1")
    nb.set_theme("JupyterLab Dark")
    try:
        view.locator("select.mv-diff").select_option("medverse-sft")
        page.wait_for_timeout(800)
        assert pixel(view, *cell_xy(15, 4)) == css_rgb(page, "--jp-brand-color1")  # redrawn in dark colours
        view.screenshot(path=str(artifacts / "mask_inspector-dark.png"))
    finally:
        nb.set_theme("JupyterLab Light")
    assert page.js_errors == []


REQUEST_STATE = ("print(json.dumps({'mode': mi.mode, 'diff': mi.diff_mode, 'T': mi.T, 'notice': mi.notice, "
                 "'explanation': mi.explanation}))")


def test_request_mode_shows_each_request_with_its_repeated_blocks(notebook, artifacts):
    """Choosing request in the view: Python answers with the request layout (56 tokens: step 3
    repeats 1 and 2, step 4 repeats 1, step 5 repeats 1-3, the conclusion all five), the
    impossible diff is cleared and said, hovering names a repeated block, a click explains it."""
    nb = notebook([SETUP, REQUEST_STATE, REQUEST_STATE])
    nb.run(0)
    view = nb.panel.locator(".mv-mask-inspector")
    page = nb.page
    page.wait_for_function("document.querySelector('.mv-mask-inspector').dataset.draws >= 1")
    view.locator("select.mv-mode").select_option("request")
    page.wait_for_function("document.querySelector('.mv-mask-inspector').dataset.mode === 'request'")
    page.wait_for_function("document.querySelector('.mv-mask-inspector .mv-caption').textContent.startsWith('T = 56')")
    s = state(nb, 1)
    assert (s["mode"], s["diff"], s["T"]) == ("request", "", 56) and "different layouts" in s["notice"]
    cell = M // 56
    assert view.get_attribute("data-matrix-px") == str(cell * 56)  # shown whole: the zoom follows the new size
    # step 3's segment is tokens 11-19: step 1 repeated (11-13), step 2 repeated (14-17), its own 18-19
    view.locator("canvas.mv-overlay").scroll_into_view_if_needed()
    box = view.locator("canvas.mv-overlay").bounding_box()
    x, y = cell_xy(19, 12, cell)
    page.mouse.move(box["x"] + x - 2, box["y"] + y - 2)
    page.mouse.move(box["x"] + x, box["y"] + y)
    page.wait_for_function("document.querySelector('.mv-mask-inspector .mv-hover').textContent.startsWith('q ')")
    hover = view.locator(".mv-hover").inner_text()
    assert hover.startswith("q 19 (step 3, pos 12)") and "can see k 12 (step 3, repeating step 1, pos 5)" in hover
    assert pixel(view, *cell_xy(19, 12, cell)) == css_rgb(page, "--jp-brand-color1")
    assert pixel(view, *cell_xy(19, 5, cell)) == css_rgb(page, "--jp-layout-color2")  # step 1's own block: another request
    page.mouse.click(box["x"] + x, box["y"] + y)
    page.wait_for_function("document.querySelector('.mv-mask-inspector .mv-explain').textContent.includes('[request-repeat]')")
    s = state(nb, 2)
    assert s["explanation"]["reason"] == "request-repeat" and s["explanation"]["allowed"]
    nb.screenshots(view, artifacts / "mask_inspector-request")
    assert page.js_errors == []


BIG = """\
import medverse_lab as ml
steps = [ml.Step(str(i + 1), "s", [str(i)] if i % 4 else []) for i in range(64)]
big = ml.Layout.from_plan(ml.Plan(steps), prefix_len=96, step_lens=62, conclusion_len=32)
mi = ml.MaskInspector(big, mode="dag", diff="medverse-sft")
mi"""


def test_4096_tokens_render_and_stay_responsive(notebook, artifacts):
    nb = notebook([BIG, "print(mi.mode, mi.T)"])
    nb.run(0)
    view = nb.panel.locator(".mv-mask-inspector")
    page = nb.page
    page.wait_for_function("document.querySelector('.mv-mask-inspector').dataset.draws >= 1", timeout=60_000)
    draw_ms = float(view.get_attribute("data-draw-ms"))
    assert draw_ms < 2000, f"a 4096 x 4096 draw took {draw_ms} ms"
    # the upper triangle is the causal future; the prefix column is allowed everywhere
    assert dominant(view, BAND + M - 20, BAND + 20) == css_rgb(page, "--jp-layout-color2")
    assert dominant(view, BAND + 5, BAND + M - 20) == css_rgb(page, "--jp-brand-color1")
    # hovering answers at once (no round trip): 30 moves, each updating the token line
    box = view.locator("canvas.mv-overlay").bounding_box()
    t0 = time.perf_counter()
    for i in range(30):
        page.mouse.move(box["x"] + BAND + 100 + 10 * i, box["y"] + BAND + 400)
    elapsed = time.perf_counter() - t0
    assert view.locator(".mv-hover").inner_text().startswith("q ")
    assert elapsed < 10, f"30 hover moves took {elapsed:.1f}s"
    # a mode switch goes to Python and back with a new 2 MB mask
    t0 = time.perf_counter()
    view.locator("select.mv-mode").select_option("speculative")
    page.wait_for_function("document.querySelector('.mv-mask-inspector').dataset.mode === 'speculative'",
                           timeout=30_000)
    assert time.perf_counter() - t0 < 15
    caption = view.locator(".mv-caption").inner_text()
    assert "T = 4,096 tokens (4,096 × 4,096 = 16,777,216 cells)" in caption
    assert any("," in t for t in view.locator(".mv-tick-x").all_inner_texts())  # e.g. "1,000"
    # zoom with Ctrl + wheel, then click a cell: explained from Python
    page.mouse.move(box["x"] + BAND + 300, box["y"] + BAND + 300)
    page.keyboard.down("Control")
    for _ in range(10):
        page.mouse.wheel(0, -100)
    page.keyboard.up("Control")
    page.wait_for_function("document.querySelector('.mv-mask-inspector .mv-caption').textContent.includes('Zoom')")
    page.mouse.click(box["x"] + BAND + 300, box["y"] + BAND + 300)
    page.wait_for_function("document.querySelector('.mv-mask-inspector .mv-explain').textContent.startsWith('speculative')")
    view.screenshot(path=str(artifacts / "mask_inspector-4096-light.png"))
    assert nb.run(1).split() == ["speculative", "4096"]
    assert page.js_errors == []


SMALL = """\
import medverse_lab as ml
plan = ml.Plan([ml.Step("1", "a"), ml.Step("2", "b"), ml.Step("3", "c", ["1", "2"])])
layout = ml.Layout.from_plan(plan, prefix_len=120, step_lens=60, conclusion_len=40)
mi = ml.MaskInspector(layout, mode="dag")
mi"""
TALL = "for i in range(120): print('line', i)  # a long notebook, so the page can scroll"
SCROLLER = """el => { for (let e = el; e; e = e.parentElement) {
    const oy = getComputedStyle(e).overflowY;
    if ((oy === 'auto' || oy === 'scroll') && e.scrollHeight > e.clientHeight) return e.scrollTop; }
  return -1; }"""


def test_a_small_mask_fits_its_canvas_has_an_axis_and_the_wheel_scrolls_the_page(notebook, artifacts):
    nb = notebook([SMALL, TALL, "print(mi.T)"])
    nb.run(0)
    nb.run(1)
    page = nb.page
    view = nb.panel.locator(".mv-mask-inspector")
    page.wait_for_function("document.querySelector('.mv-mask-inspector').dataset.draws >= 1")
    T = int(nb.run(2).strip())
    S = (M // T) * T
    assert M // 2 < S < M  # one pixel a token: this mask is drawn smaller than the largest size
    # the canvas fits the matrix, the strip and its axis: no dead band under them
    base = view.locator("canvas.mv-matrix")
    assert base.evaluate("c => [c.width, c.height]") == [BAND + S + RIGHT, BAND + S + GAP + STRIP + AXIS]
    stage = view.locator(".mv-stage").bounding_box()
    assert stage["height"] == pytest.approx(BAND + S + GAP + STRIP + AXIS, abs=1)
    # the position strip has axes: token index under it, position right of it, readable numbers
    xs = view.locator(".mv-tick-x")
    ys = view.locator(".mv-tick-y")
    assert xs.count() >= 3 and ys.count() >= 2
    xt = [int(t.replace(",", "")) for t in xs.all_inner_texts()]
    assert xt == sorted(xt) and xt[0] == 0 and xt[-1] < T
    yt = [int(t.replace(",", "")) for t in ys.all_inner_texts()]
    assert yt == sorted(yt) and yt[-1] <= T
    for tick in (xs.first, ys.last):
        assert float(tick.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")) >= 11
        box, sbox = tick.bounding_box(), stage
        assert sbox["y"] <= box["y"] and box["y"] + box["height"] <= sbox["y"] + sbox["height"] + 1
    caption = view.locator(".mv-caption").inner_text()
    assert f"T = {T} tokens ({T} × {T} = {T * T:,} cells)" in caption

    # a plain wheel over the mask scrolls the notebook and leaves the zoom alone
    overlay = view.locator("canvas.mv-overlay")
    overlay.scroll_into_view_if_needed()
    box = overlay.bounding_box()
    page.mouse.move(box["x"] + BAND + S // 2, box["y"] + BAND + S // 3)
    before = overlay.evaluate(SCROLLER)
    assert before >= 0
    page.mouse.wheel(0, 300)
    page.wait_for_function(f"(() => {{ const f = {SCROLLER}; "
                           f"return f(document.querySelector('.mv-mask-inspector canvas.mv-overlay')) > {before}; }})()")
    assert "Zoom" not in view.locator(".mv-caption").inner_text()
    # Ctrl + wheel zooms (and does not scroll)
    overlay.scroll_into_view_if_needed()
    box = overlay.bounding_box()
    page.mouse.move(box["x"] + BAND + S // 2, box["y"] + BAND + S // 2)
    at = overlay.evaluate(SCROLLER)
    page.keyboard.down("Control")
    page.mouse.wheel(0, -100)
    page.keyboard.up("Control")
    page.wait_for_function("document.querySelector('.mv-mask-inspector .mv-caption').textContent.includes('Zoom')")
    assert overlay.evaluate(SCROLLER) == at
    # the buttons: + zooms in further, - back out, Reset shows the whole mask
    zoom = lambda: view.locator(".mv-caption").inner_text().split("Zoom: rows ")[1]
    first = zoom()
    view.get_by_role("button", name="zoom in").click()
    assert zoom() != first
    rows = lambda z: [int(v.replace(",", "")) for v in z.split(",")[0].split("–")]
    (a, b), (c, d) = rows(first), rows(zoom())
    assert d - c < b - a
    view.get_by_role("button", name="zoom out").click()
    view.get_by_role("button", name="Reset zoom").click()
    assert "Zoom" not in view.locator(".mv-caption").inner_text()
    assert view.get_by_role("button", name="Reset zoom").is_disabled()
    nb.screenshots(view, artifacts / "mask_inspector-small")
    assert page.js_errors == []


EVIL_TOKENS = """\
import json, polars as pl
import medverse_lab as ml
plan = ml.Plan([ml.Step("1", "a"), ml.Step("2", "b")])
layout = ml.Layout.from_plan(plan, prefix_len=3, step_lens={"1": 2, "2": 2}, conclusion_len=1)
class Run:  # what MaskInspector reads of a Run: layout, mode, tokens
    mode = "dag"
run = Run(); run.layout = layout
evil = '<img src=x onerror="window.__pwned = 1">'
run.tokens = pl.DataFrame({"text": [evil, "<script>window.__pwned = 2</script>"] + ["t"] * (layout.T - 2)})
mi = ml.MaskInspector(run)
display(mi)
display(mi)"""


def test_token_text_is_shown_literally_in_two_views(notebook):
    nb = notebook([EVIL_TOKENS, "print(json.dumps(mi.explanation))"])
    nb.run(0)
    views = nb.panel.locator(".mv-mask-inspector")
    nb.page.wait_for_function(
        "[...document.querySelectorAll('.mv-mask-inspector')].filter(v => v.dataset.draws >= 1).length === 2")
    cell = M // 8
    second = views.nth(1)
    second.locator("canvas.mv-overlay").scroll_into_view_if_needed()
    box = second.locator("canvas.mv-overlay").bounding_box()
    nb.page.mouse.move(box["x"] + BAND + cell // 2 + 0, box["y"] + BAND + cell + cell // 2)  # q 1, k 0
    hover = second.locator(".mv-hover").inner_text()
    assert '<script>window.__pwned = 2</script>' in hover and '<img src=x onerror=' in hover
    nb.page.mouse.click(box["x"] + BAND + cell // 2, box["y"] + BAND + cell + cell // 2)
    # the explanation is shared state: both views show it, as text
    nb.page.wait_for_function(
        "[...document.querySelectorAll('.mv-mask-inspector .mv-explain')].every(e => e.textContent.includes('<img'))")
    assert views.locator("img").count() == 0 and views.locator("script").count() == 0
    nb.page.wait_for_timeout(300)
    assert nb.page.evaluate("window.__pwned") is None
    assert json.loads(nb.run(1).strip())["k_text"].startswith("<img")


NEXT = """\
other = ml.Layout.from_plan(plan, prefix_len=6, step_lens={"1": 2, "2": 3, "3": 2, "4": 2, "5": 3},
                            conclusion_len=4, separator_lens=1)
mi.show(other)  # another record: the same T, other segments"""


def test_zoom_resets_on_a_new_mask_steps_only_legend_and_marker(notebook, artifacts):
    nb = notebook([SETUP, NEXT])
    nb.run(0)
    page = nb.page
    view = nb.panel.locator(".mv-mask-inspector")
    view.locator("canvas.mv-matrix").wait_for()
    page.wait_for_function("document.querySelector('.mv-mask-inspector').dataset.draws >= 1")
    caption = view.locator(".mv-caption")
    legend = view.locator(".mv-legend").inner_text()
    assert "prefix band" in legend and "step bands" in legend and "conclusion band" in legend
    assert "pos strip: each token's position id in layered" in legend and "dashed red: in medverse-sft" in legend
    box = view.locator("canvas.mv-overlay").bounding_box()
    x, y = cell_xy(8, 6)
    page.mouse.move(box["x"] + x, box["y"] + y)
    assert "pos 5 in layered, 5 in medverse-sft" in view.locator(".mv-hover").inner_text()  # both modes named

    # steps only: rows and columns from the prefix end (4) on
    view.get_by_role("button", name="Steps only").click()
    assert "Zoom: rows 4–21, columns 4–21." in caption.inner_text()
    assert view.get_by_role("button", name="Steps only").is_disabled()
    nb.screenshots(view, artifacts / "mask_inspector-steps-only")

    # a new mask of the same size (another record) is shown whole, not through the old zoom
    nb.run(1)
    page.wait_for_function("!document.querySelector('.mv-mask-inspector .mv-caption').textContent.includes('Zoom:')")
    assert view.get_by_role("button", name="Reset zoom").is_disabled()

    # a click marks a cell; another mode clears the mark (the cell means another thing there)
    view.locator("canvas.mv-overlay").scroll_into_view_if_needed()
    box = view.locator("canvas.mv-overlay").bounding_box()  # the page moved when the cell ran
    page.mouse.click(box["x"] + x, box["y"] + y)
    page.wait_for_function("document.querySelector('.mv-mask-inspector').dataset.marker === '8,6'")
    view.locator("select.mv-mode").select_option("dag")
    page.wait_for_function("document.querySelector('.mv-mask-inspector').dataset.marker === ''")
    assert page.js_errors == []
