"""PlanEditor in a real JupyterLab: draw, edit by clicking and typing, undo, read the
state back from the kernel; untrusted text stays text; two views; both themes."""

from __future__ import annotations

import json

import pytest
from .engine_setup import ENGINE as _ENGINE

pytestmark = pytest.mark.browser

SETUP = """\
import medverse_lab as ml
plan = ml.Plan([ml.Step("1", "chest pain + ST elevation -> STEMI"), ml.Step("2", "troponin rise -> necrosis"),
                ml.Step("3", "STEMI + necrosis -> primary PCI", ["1", "2"])])
editor = ml.PlanEditor(plan)
editor"""
STATE = "print(json.dumps({'plan': json.loads(editor.plan.to_json()), 'errors': editor.errors}))"
EVIL = '<img src=x onerror="window.__pwned = 1"><script>window.__pwned = 2</script>'


def state(nb, cell) -> dict:
    return json.loads(nb.run(cell).strip().splitlines()[-1])


def step(view, sid):
    return view.locator(f".mv-transition[data-step='{sid}']")


def test_edit_a_plan_by_clicking_and_typing(notebook, artifacts):
    nb = notebook([SETUP, "import json\n" + STATE, STATE])
    nb.run(0)
    view = nb.panel.locator(".mv-plan-editor")
    step(view, "3").wait_for()
    assert view.locator(".mv-transition").count() == 3
    assert view.locator(".mv-place").count() == 4  # source + one per step
    assert view.locator("[data-place='source'] .mv-token").count() == 1
    assert view.locator(".mv-arc").count() == 7
    assert "mv-enabled" in step(view, "1").get_attribute("class")

    view.get_by_role("button", name="+ Step").click()
    step(view, "4").wait_for()
    view.locator("textarea.mv-desc").fill("PCI -> reperfusion")
    view.get_by_role("button", name="Link steps").click()
    step(view, "3").click()
    step(view, "4").click()
    nb.page.wait_for_function(
        "document.querySelectorAll('.mv-plan-editor .mv-arc[data-from=\"p2\"][data-to=\"t3\"]').length === 1")

    # step 1 depending on step 4 closes a cycle: shown at step 1, the plan stays valid in Python
    step(view, "4").click()
    step(view, "1").click()
    view.locator(".mv-problems li[data-kind='cycle']").wait_for()
    assert "mv-error" in step(view, "1").get_attribute("class")
    assert "cycle" in view.locator(".mv-problems").inner_text()
    s = state(nb, 1)
    assert [e["kind"] for e in s["errors"]] == ["cycle"]
    assert s["plan"]["steps"][3] == {"id": "4", "description": "PCI -> reperfusion", "deps": ["3"]}
    nb.page.screenshot(path=str(artifacts / "plan_editor-invalid-light.png"))

    view.get_by_role("button", name="Undo").click()
    view.locator(".mv-problems li").wait_for(state="detached")
    assert "Valid plan: 4 steps" in view.locator(".mv-status").inner_text()
    s = state(nb, 2)
    assert s["errors"] == []
    assert [st["deps"] for st in s["plan"]["steps"]] == [[], [], ["1", "2"], ["3"]]

    view.get_by_role("button", name="Fire frontier").click()
    nb.page.wait_for_function("document.querySelectorAll('.mv-plan-editor .mv-transition.mv-fired').length === 2")
    assert view.locator("[data-place='done:1'] .mv-token").count() == 1
    view.screenshot(path=str(artifacts / "plan_editor-light.png"))
    nb.set_theme("JupyterLab Dark")
    try:
        view.screenshot(path=str(artifacts / "plan_editor-dark.png"))
        bg = view.evaluate("el => getComputedStyle(el).backgroundColor")
        fg = view.evaluate("el => getComputedStyle(el.querySelector('.mv-step-id')).fill")
        assert bg != fg
        assert _luminance(bg) < 0.3 < _luminance(fg)
    finally:
        nb.set_theme("JupyterLab Light")
    assert nb.page.js_errors == []


def _luminance(css: str) -> float:
    import re

    r, g, b = (int(v) for v in re.findall(r"\d+", css)[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


FOCUS = "document.querySelector('.mv-plan-editor').contains(document.activeElement)"


def test_delete_and_ctrl_z_work_after_clicking_a_step(notebook):
    """The hint promises Delete: after a click the redraw replaces the clicked node, and
    focus must stay in the widget (not fall to <body>) for the keys to arrive."""
    nb = notebook([SETUP, "import json\n" + STATE, STATE])
    nb.run(0)
    view = nb.panel.locator(".mv-plan-editor")
    assert "Delete or Backspace removes it" in view.locator(".mv-hint").inner_text()
    step(view, "2").click()
    nb.page.wait_for_function("document.querySelector('.mv-plan-editor .mv-transition.mv-selected')"
                              "?.getAttribute('data-step') === '2'")
    assert view.locator(".mv-side-title").inner_text() == "Step 2"
    assert nb.page.evaluate(FOCUS), nb.page.evaluate("document.activeElement.tagName")
    nb.page.keyboard.press("Delete")
    step(view, "2").wait_for(state="detached")
    assert "Valid plan: 2 steps" in view.locator(".mv-status").inner_text()
    assert nb.page.evaluate(FOCUS)  # the removed node had focus: the widget keeps it
    s = state(nb, 1)
    assert [st["id"] for st in s["plan"]["steps"]] == ["1", "3"] and s["plan"]["steps"][1]["deps"] == ["1"]

    step(view, "3").click()  # the cell run above took focus; a click gives it back
    nb.page.keyboard.press("Control+z")
    step(view, "2").wait_for()
    assert "Valid plan: 3 steps" in view.locator(".mv-status").inner_text()
    nb.page.keyboard.press("Control+Shift+z")
    step(view, "2").wait_for(state="detached")
    nb.page.keyboard.press("Control+z")
    step(view, "2").wait_for()
    s = state(nb, 2)
    assert [st["deps"] for st in s["plan"]["steps"]] == [[], [], ["1", "2"]]
    # Backspace removes the selected step too (a laptop has no Delete key); Ctrl+Z brings it back
    step(view, "2").click()
    nb.page.keyboard.press("Backspace")
    step(view, "2").wait_for(state="detached")
    step(view, "3").click()
    nb.page.keyboard.press("Control+z")
    step(view, "2").wait_for()
    # linking says what it waits for, where the eye is
    hint = view.locator(".mv-hint")
    view.get_by_role("button", name="Link steps").click()
    assert hint.inner_text().startswith("Linking: click the step that is needed first")
    step(view, "3").click()
    assert "step 3 chosen; now click the step that needs it" in hint.inner_text()
    step(view, "1").click()  # 1 now needs 3, which needs 1: a cycle
    view.locator(".mv-status").filter(has_text="problem").wait_for()
    nb.page.keyboard.press("Escape")
    assert hint.inner_text().startswith("Click a step to edit it")
    # a refused renumber (the draft is not a DAG) is said in the error colour
    view.get_by_role("button", name="Renumber").click()
    nb.page.wait_for_function("document.querySelector('.mv-plan-editor .mv-notice').classList.contains('mv-error')")
    assert "cycle" in view.locator(".mv-notice").inner_text().lower()
    step(view, "3").click()
    nb.page.keyboard.press("Control+z")  # the link undone: the notice goes back to plain
    view.locator(".mv-status").filter(has_text="Valid plan").wait_for()
    # the keyboard alone: Tab to a step, Enter selects it, focus stays on that step's new node
    step(view, "1").focus()
    nb.page.keyboard.press("Enter")
    nb.page.wait_for_function("document.querySelector('.mv-plan-editor .mv-transition.mv-selected')"
                              "?.getAttribute('data-step') === '1'")
    assert nb.page.evaluate("document.activeElement.getAttribute('data-step')") == "1"
    assert nb.page.js_errors == []


def test_descriptions_render_literally_and_run_nothing(notebook):
    setup = SETUP.replace('"troponin rise -> necrosis"', repr(EVIL))
    nb = notebook([setup, "import json\n" + STATE])
    nb.run(0)
    view = nb.panel.locator(".mv-plan-editor")
    step(view, "2").click()
    assert view.locator("textarea.mv-desc").input_value() == EVIL
    assert view.locator("img").count() == 0 and view.locator("script").count() == 0
    assert "<img src=x" in step(view, "2").locator("title").text_content()
    # a description typed in the browser is untrusted too
    step(view, "1").click()
    view.locator("textarea.mv-desc").fill(EVIL + " typed")
    nb.page.wait_for_function(
        "[...document.querySelectorAll('.mv-plan-editor .mv-transition[data-step=\"1\"] title')]"
        ".some(t => t.textContent.includes('typed'))")
    nb.page.wait_for_timeout(500)
    assert nb.page.evaluate("window.__pwned") is None
    assert view.locator("img").count() == 0
    assert state(nb, 1)["plan"]["steps"][0]["description"] == EVIL + " typed"


def test_two_views_of_one_editor_both_work(notebook):
    two = SETUP.removesuffix("editor") + "display(editor)\ndisplay(editor)"
    nb = notebook([two, "import json\n" + STATE])
    nb.run(0)
    views = nb.panel.locator(".mv-plan-editor")
    step(views.nth(1), "3").wait_for()
    assert views.count() == 2
    views.nth(0).get_by_role("button", name="+ Step").click()
    step(views.nth(1), "4").wait_for()
    views.nth(1).get_by_role("button", name="Link steps").click()
    step(views.nth(1), "2").click()
    step(views.nth(1), "4").click()
    nb.page.wait_for_function(
        "[...document.querySelectorAll('.mv-plan-editor')].every("
        "v => v.querySelectorAll('.mv-arc[data-from=\"p1\"][data-to=\"t3\"]').length === 1)")
    assert state(nb, 1)["plan"]["steps"][3]["deps"] == ["2"]


ENGINE = _ENGINE + """\
editor = ml.PlanEditor(ml.parse_trace(text).plan, engine=engine)
editor"""


def test_run_button_fires_the_net_as_the_engine_decodes(notebook, artifacts):
    nb = notebook([ENGINE, "print(json.dumps({'fired': editor.fired, 'steps': len(editor.last_run.steps), "
                           "'busy': editor.busy}))"])
    nb.run(0)
    view = nb.panel.locator(".mv-plan-editor")
    step(view, "5").wait_for()
    assert view.get_by_role("button", name="Run").is_disabled() is False
    view.locator("input.mv-question").fill("Chest pain with ST elevation: next step? A. aspirin B. PCI")
    view.get_by_role("button", name="Run").click()
    nb.page.wait_for_function(
        "document.querySelectorAll('.mv-plan-editor .mv-transition.mv-fired').length === 5", timeout=120_000)
    nb.page.wait_for_function("document.querySelector('.mv-plan-editor .mv-notice').textContent.startsWith('done')")
    s = json.loads(nb.run(1).strip().splitlines()[-1])
    assert sorted(s["fired"]) == ["1", "2", "3", "4", "5"] and s["steps"] == 5 and not s["busy"]
    view.screenshot(path=str(artifacts / "plan_editor-run-light.png"))


def test_a_backward_arc_runs_under_the_boxes_not_through_them(notebook, artifacts):
    # step 1 needs step 3, which is drawn right of it: the arc must go back, around the boxes
    nb = notebook(["import medverse_lab as ml\neditor = ml.PlanEditor(ml.Plan([ml.Step('1', 'history', ['3']), "
                   "ml.Step('2', 'exam'), ml.Step('3', 'labs -> anaemia', ['2'])]))\neditor"])
    nb.run(0)
    view = nb.panel.locator(".mv-plan-editor")
    back = view.locator(".mv-arc.mv-back")
    back.first.wait_for()
    assert back.count() == 1 and back.get_attribute("data-to") == "t0"
    boxes = [b.bounding_box() for b in view.locator(".mv-transition rect").all()]
    # the arc's lowest run lies under every box; its bounding box spans from step 3's place back to step 1
    arc = back.locator("path").bounding_box()
    assert arc["y"] + arc["height"] > max(b["y"] + b["height"] for b in boxes) + 5
    texts = [t.bounding_box() for t in view.locator(".mv-transition text").all()]
    path = back.locator("path")
    below = path.evaluate("p => { const n = p.getTotalLength(); const pts = []; for (let i = 0; i <= 100; i++) {"
                          " const q = p.getPointAtLength(n * i / 100); pts.push([q.x, q.y]); } return pts; }")
    svg = view.locator("svg.mv-net").bounding_box()
    for x, y in below:  # no point of the arc falls inside a label
        px, py = svg["x"] + x, svg["y"] + y
        assert not any(t["x"] <= px <= t["x"] + t["width"] and t["y"] <= py <= t["y"] + t["height"] for t in texts)
    nb.screenshots(view, artifacts / "plan-editor-back-arc")
