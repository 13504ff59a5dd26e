"""RunViewer in a real JupyterLab: Run decodes in the background and the lanes fill in,
a step is read and rerun with edited text, the diff and history show, text stays text."""

from __future__ import annotations

import json

import pytest
from .engine_setup import ENGINE

pytestmark = pytest.mark.browser

EVIL = '<img src=x onerror="window.__pwned = 1">'
SETUP = ENGINE + f"""\
plan = ml.parse_trace(text).plan
plan = ml.Plan([ml.Step(s.id, {EVIL!r} if s.id == "2" else s.description, s.deps) for s in plan.steps])
viewer = ml.RunViewer(engine, plan=plan)
viewer.max_step_tokens = 8
viewer"""
STATE = ("print(json.dumps({'history': viewer.history, 'step2': viewer.run.steps['2'], "
         "'busy': viewer.busy, 'answer': viewer.run.answer}))")


def test_run_read_rerun_and_diff(notebook, artifacts):
    nb = notebook([SETUP, STATE])
    nb.run(0)
    view = nb.panel.locator(".mv-run-viewer")
    view.locator("textarea.mv-question").fill("Chest pain, ST elevation: next step? A. aspirin B. PCI")
    view.get_by_role("button", name="Run").click()
    page = nb.page
    page.wait_for_function("document.querySelectorAll('.mv-run-viewer .mv-history .mv-chip').length === 1",
                           timeout=120_000)
    assert view.locator(".mv-lane").count() == 7  # plan, five steps, conclusion
    assert "against sequential" in view.locator(".mv-summary").inner_text()
    assert view.locator(".mv-lane.mv-critical").count() >= 2

    lane = view.locator(".mv-lane[data-branch='2']")
    assert EVIL in lane.locator(".mv-lane-label").get_attribute("title")
    lane.click()
    view.locator(".mv-detail-title").wait_for()
    assert view.locator(".mv-detail-title").inner_text().startswith("Step 2: <img")
    view.locator("textarea.mv-rerun-text").fill("troponin is high")
    view.get_by_role("button", name="Rerun with this text").click()
    page.wait_for_function("document.querySelectorAll('.mv-run-viewer .mv-history .mv-chip').length === 2",
                           timeout=120_000)
    view.locator(".mv-diff-text .mv-ins").first.wait_for()
    assert "troponin" in view.locator(".mv-diff-text").inner_text()
    assert "mv-changed" in lane.get_attribute("class")
    s = json.loads(nb.run(1).strip().splitlines()[-1])
    assert [h["kind"] for h in s["history"]] == ["run", "rerun"] and s["history"][1]["step"] == "2"
    assert s["step2"].strip() == "troponin is high" and not s["busy"]
    assert view.locator("img").count() == 0 and page.evaluate("window.__pwned") is None
    nb.screenshots(view, artifacts / "run_viewer")
    # back to the first run in the history
    view.locator(".mv-history .mv-chip").first.click()
    page.wait_for_function("document.querySelector('.mv-run-viewer .mv-history .mv-chip').getAttribute('aria-pressed') === 'true'")
    assert page.js_errors == []
