"""Workbench and magics in a real JupyterLab: a run fills all three views, and selecting
a step in one highlights it in the others; %%medverse_plan and %medverse run render."""

from __future__ import annotations

import json

import pytest
from .engine_setup import ENGINE

pytestmark = pytest.mark.browser

WORKBENCH = ENGINE + """\
wb = ml.Workbench(engine, plan=ml.parse_trace(text).plan)
wb.viewer.question = "Chest pain, ST elevation: next step? A. aspirin B. PCI"
wb.viewer.max_step_tokens = 6
wb"""
STATE = ("print(json.dumps({'viewer': wb.viewer.selected, 'editor': wb.editor.selected, "
         "'inspector': wb.inspector.selected, 'T': wb.inspector.T, 'run_T': wb.viewer.run.layout.T}))")


def test_workbench_links_the_three_views(notebook, artifacts):
    nb = notebook([WORKBENCH, STATE])
    nb.run(0)
    panel, page = nb.panel, nb.page
    panel.locator(".mv-run-viewer").get_by_role("button", name="Run").click()
    page.wait_for_function("document.querySelectorAll('.mv-run-viewer .mv-history .mv-chip').length === 1",
                           timeout=120_000)
    # select step 3 in the run viewer: the plan editor highlights it
    panel.locator(".mv-run-viewer .mv-lane[data-branch='3']").click()
    page.wait_for_function("document.querySelector('.mv-plan-editor .mv-transition[data-step=\"3\"]')"
                           ".classList.contains('mv-selected')")
    # select step 2 in the plan editor: the run viewer follows
    panel.locator(".mv-plan-editor .mv-transition[data-step='2']").click()
    page.wait_for_function("document.querySelector('.mv-run-viewer .mv-lane[data-branch=\"2\"]')"
                           ".classList.contains('mv-selected')")
    panel.locator(".lm-TabBar-tab", has_text="Mask").click()
    view = panel.locator(".mv-mask-inspector")
    view.locator("canvas.mv-overlay").wait_for()
    page.wait_for_function("document.querySelector('.mv-mask-inspector').dataset.draws >= 1")
    s = json.loads(nb.run(1).strip().splitlines()[-1])
    assert s["viewer"] == s["editor"] == s["inspector"] == "2" and s["T"] == s["run_T"]
    # a click on the mask's top band selects that branch everywhere
    T = s["T"]
    drawn = (560 // T) * T if T <= 560 else 560  # as in widgets/src/mask_inspector.js
    view.locator("canvas.mv-overlay").click(position={"x": 18 + drawn - 2, "y": 6})  # the conclusion's band
    page.wait_for_function("document.querySelector('.mv-run-viewer .mv-lane[data-branch=\"conclusion\"]')"
                           ".classList.contains('mv-selected')")
    # the "run my plan" label is whole: nothing in the checkbox clips it
    box = panel.locator(".widget-checkbox")
    assert box.inner_text().strip() == "run my plan (below) instead of the model's"
    clipped = box.evaluate("""el => [el, ...el.querySelectorAll('*')].filter(
        e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible').length""")
    assert clipped == 0
    label = box.locator("span").last.bounding_box()
    assert label["x"] + label["width"] <= box.bounding_box()["x"] + box.bounding_box()["width"] + 1
    # one border around the whole workbench, none nested inside it around the views
    for cls in ("mv-run-viewer", "mv-plan-editor", "mv-mask-inspector"):
        assert _framed_ancestors(panel.locator(f".{cls}")) == ["mv-workbench"], cls
    panel.locator(".lm-TabBar-tab", has_text="Plan").click()
    assert _framed_ancestors(panel.locator(".mv-plan-editor")) == ["mv-workbench"]
    workbench = panel.locator(".mv-workbench")
    page.set_viewport_size({"width": 1400, "height": 2600})  # the whole workbench in one picture
    try:
        nb.screenshots(workbench, artifacts / "workbench")
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})
    assert page.js_errors == []


FRAMED = """el => { const out = [];
  for (let e = el; e && !e.classList.contains('jp-OutputArea-output'); e = e.parentElement) {
    const cs = getComputedStyle(e);
    const sides = ['Top', 'Right', 'Bottom', 'Left'].filter(
      s => parseFloat(cs['border' + s + 'Width']) > 0 && cs['border' + s + 'Style'] !== 'none');
    const cls = [...e.classList];
    if (sides.length === 4) out.push(cls.find(c => c.startsWith('mv-')) || cls.find(c => c.startsWith('widget-')) || e.className);
  }
  return out; }"""


def _framed_ancestors(locator) -> list[str]:
    """The elements with a border on all four sides from ``locator`` up to its output, innermost first."""
    return locator.evaluate(FRAMED)


MAGICS = [
    "%load_ext medverse_lab\n" + ENGINE,
    "%%medverse_plan ed\nTransient Step 1: chest pain -> STEMI; Dependency: []\n"
    "Transient Step 2: troponin -> necrosis; Dependency: []\nTransient Step 3: STEMI + necrosis -> PCI; Dependency: [1, 2]",
    '%medverse run "Chest pain: next step? A. aspirin B. PCI" --plan ed --max-step-tokens 5 --seed 2',
    "%%medverse_plan\nTransient Step 1: no dependency list here",
]


def test_magics_open_an_editor_a_run_viewer_and_show_plan_errors(notebook):
    nb = notebook(MAGICS)
    nb.run(0)
    nb.run(1)
    panel, page = nb.panel, nb.page
    panel.locator(".mv-plan-editor .mv-transition[data-step='3']").wait_for()
    nb.run(2)
    page.wait_for_function("document.querySelectorAll('.mv-run-viewer .mv-history .mv-chip').length === 1",
                           timeout=120_000)
    assert panel.locator(".mv-run-viewer .mv-lane").count() == 5  # plan, three steps, conclusion
    assert "bad-outline" in nb.run(3)


FAILING = ENGINE + """\
wb = ml.Workbench(engine)  # the random model writes its own plan: it does not validate
wb.viewer.question = "Chest pain, ST elevation: next step? A. aspirin B. PCI"
wb.viewer.max_step_tokens = 6
wb"""
FAILING_STATE = "print(json.dumps({'notice': wb.viewer.notice, 'warnings': wb.viewer.summary['warnings']}))"
CHIPS = "document.querySelectorAll('.mv-run-viewer .mv-history .mv-chip').length === {}"


def test_a_rejected_plan_and_its_fallback_are_shown_where_the_user_looks(notebook, artifacts):
    nb = notebook([FAILING, FAILING_STATE])
    nb.run(0)
    panel, page = nb.panel, nb.page
    viewer = panel.locator(".mv-run-viewer")
    run = viewer.get_by_role("button", name="Run", exact=True)
    run.click()
    page.wait_for_function(CHIPS.format(1), timeout=120_000)
    s = json.loads(nb.run(1).strip().splitlines()[-1])
    notice = viewer.locator(".mv-notice")
    assert notice.inner_text() == s["notice"] and "decoded sequential, not dag" in s["notice"]
    assert "mv-warn" in notice.get_attribute("class")  # the warning colour, not the dim "done"
    shown = viewer.locator(".mv-warnings li").all_inner_texts()
    assert shown == s["warnings"] and any("did not validate" in w for w in shown)
    assert any(w.startswith("no answer") or "closed by the engine" in w for w in shown)
    assert viewer.locator("select.mv-mode").input_value() == "dag"  # what was asked; the fallback is said above
    plan_warning = panel.locator(".mv-plan-editor .mv-plan-warning")
    assert plan_warning.is_visible() and "decoded sequential (not dag)" in plan_warning.inner_text()
    assert "The problems:" in plan_warning.inner_text()
    page.set_viewport_size({"width": 1400, "height": 2600})
    try:
        nb.screenshots(panel.locator(".mv-workbench"), artifacts / "workbench-plan-rejected")
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})

    # run the salvaged plan as given: no fallback now, and the notice says so
    chip = viewer.locator(".mv-history .mv-chip").nth(0)
    assert "sequential (fallback from dag)" in chip.inner_text() and "mv-warn" in chip.get_attribute("class")
    panel.locator(".widget-checkbox input").check()
    run.click()
    page.wait_for_function(CHIPS.format(2), timeout=120_000)
    page.wait_for_function("!document.querySelector('.mv-run-viewer .mv-notice').textContent.includes('decoded')")
    assert not plan_warning.is_visible()
    # back to the first run through its history chip: notice and warnings follow the run shown
    chip.click()
    page.wait_for_function("document.querySelector('.mv-run-viewer .mv-notice').textContent.startsWith('showing run #1')")
    assert "decoded sequential, not dag" in notice.inner_text() and "mv-warn" in notice.get_attribute("class")
    assert any("did not validate" in w for w in viewer.locator(".mv-warnings li").all_inner_texts())
    assert page.js_errors == []
