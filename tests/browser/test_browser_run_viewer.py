"""RunViewer in a real JupyterLab: Run decodes in the background and the lanes fill in,
a step is read and rerun with edited text, the diff and history show, text stays text."""

from __future__ import annotations

import json
import re

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
STATE = ("print(json.dumps({'history': viewer.history, 'step2': viewer.run.steps['2'], 'seed': viewer.seed, "
         "'busy': viewer.busy, 'answer': viewer.run.answer, 'summary': viewer.summary}))")
CHIPS = "document.querySelectorAll('.mv-run-viewer .mv-history .mv-chip').length === {}"


def seed_box(view) -> int:
    return int(view.locator("input.mv-seed").input_value())


def chip(view, i) -> str:
    return view.locator(".mv-history .mv-chip").nth(i).inner_text()


def rerun_with_text(nb, view, text, n):
    view.locator("textarea.mv-rerun-text").fill(text)
    view.get_by_role("button", name="Rerun with this text").click()
    nb.page.wait_for_function(CHIPS.format(n), timeout=120_000)


def test_run_read_rerun_and_diff(notebook, artifacts):
    nb = notebook([SETUP, STATE])
    nb.run(0)
    view = nb.panel.locator(".mv-run-viewer")
    view.locator("textarea.mv-question").fill("Chest pain, ST elevation: next step? A. aspirin B. PCI")
    view.get_by_role("button", name="Run").click()
    page = nb.page
    page.wait_for_function(CHIPS.format(1), timeout=120_000)
    assert view.locator(".mv-lane").count() == 7  # plan, five steps, conclusion
    summary = view.locator(".mv-summary").inner_text()
    assert "call speedup" in summary and "against sequential decoding" in summary
    assert view.locator(".mv-lane.mv-critical").count() >= 2
    assert "seed 0" in chip(view, 0) and seed_box(view) == 0

    lane = view.locator(".mv-lane[data-branch='2']")
    assert EVIL in lane.locator(".mv-lane-label").get_attribute("title")
    lane.click()
    view.locator(".mv-detail-title").wait_for()
    assert view.locator(".mv-detail-title").inner_text().startswith("Step 2: <img")
    rerun_with_text(nb, view, "troponin rises after 3 hours", 2)
    view.locator(".mv-diff-text .mv-ins").first.wait_for()
    assert "troponin" in view.locator(".mv-diff-text").inner_text()
    assert "mv-changed" in lane.get_attribute("class")
    s = json.loads(nb.run(1).strip().splitlines()[-1])
    assert [h["kind"] for h in s["history"]] == ["run", "rerun"] and s["history"][1]["step"] == "2"
    assert s["step2"].strip() == "troponin rises after 3 hours" and not s["busy"]
    # the rerun picked its own seed (run.seed + 1): its chip and Python say so; the seed box
    # keeps the seed the user set for the next Run
    assert s["history"][1]["seed"] == 1 and s["seed"] == 0
    assert "seed 1" in chip(view, 1) and seed_box(view) == 0
    legend = view.locator(".mv-legend").inner_text()
    assert "on the critical path" in legend and "changed by the rerun" in legend and "selected" in legend
    # the ideal counts the re-decoded branches only, so it is at least 1, and it is Python's figure
    summary = view.locator(".mv-summary").inner_text()
    ideal = float(re.search(r"ideal for the re-decoded steps, one token per call: ([\d.]+)x", summary).group(1))
    assert ideal >= 1 and ideal == pytest.approx(s["summary"]["ideal_call_speedup"], abs=0.006)
    # no answer says why
    assert s["answer"] is None and s["summary"]["answer_note"].startswith("no answer: ")
    assert s["summary"]["answer_note"][1:] in summary and "Answer: none" not in summary
    assert view.locator(".mv-notice").inner_text() == "rerun of step 2 done: " + s["summary"]["answer_note"]

    # a replaced word and its replacement read as words: "3 4 to 6", not "34 to 6"
    rerun_with_text(nb, view, "troponin rises after 4 to 6 hours", 3)
    page.wait_for_function("document.querySelector('.mv-run-viewer .mv-diff-text .mv-del')?.textContent === '3'")
    diff = view.locator(".mv-diff-text")
    assert diff.locator(".mv-ins").inner_text() == "4 to 6"
    assert "troponin rises after 3 4 to 6 hours" in diff.inner_text()
    assert view.locator("img").count() == 0 and page.evaluate("window.__pwned") is None
    nb.screenshots(view, artifacts / "run_viewer")

    # a seed typed for the rerun is the seed its chip shows; the main seed box keeps its own
    view.locator("input.mv-rerun-seed").fill("5")
    view.get_by_role("button", name="Rerun with seed").click()
    page.wait_for_function(CHIPS.format(4), timeout=120_000)
    assert "seed 5" in chip(view, 3) and seed_box(view) == 0
    # back to the first run in the history: the notice follows it
    view.locator(".mv-history .mv-chip").first.click()
    page.wait_for_function("document.querySelector('.mv-run-viewer .mv-history .mv-chip').getAttribute('aria-pressed') === 'true'")
    page.wait_for_function("document.querySelector('.mv-run-viewer .mv-notice').textContent.startsWith('showing run #1')")
    assert seed_box(view) == 0
    assert page.js_errors == []
