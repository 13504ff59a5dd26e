"""A saved notebook with widget outputs, reopened in a new page after its kernel is gone.

A widget's saved output holds the view (a model id only the kernel that made it knew)
and a ``text/plain`` fallback; beside it is a second output, an HTML picture of what the
widget showed, hidden while the live view is drawn. What a reopened notebook shows:

- a notebook the user received (another machine, a repository: JupyterLab does not
  trust it) is drawn with the ``text/plain``: each widget's placeholder says what it was
  and to rerun the cell, and its picture shows what it was;
- a notebook JupyterLab saved itself is trusted: its widget manager picks the view, finds
  no model and writes its own "Error displaying widget: model not found" (no text from
  the kernel side can replace that line); the picture below it shows what it was;
- with the widget manager's "save widget state" setting on, the views are drawn from the
  saved state: each says that its kernel is gone, and its controls take no clicks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from .conftest import Notebook, open_page

pytestmark = pytest.mark.browser

CELLS = [
    """\
import medverse_lab as ml
plan = ml.Plan([ml.Step("1", "a"), ml.Step("2", "b"), ml.Step("3", "c", ["1", "2"])])
layout = ml.Layout.from_plan(plan, prefix_len=6, step_lens=4, conclusion_len=3)""",
    "ml.PlanEditor(plan)",
    "ml.MaskInspector(layout)",
    "ml.RunViewer(None)",
    "ml.Workbench(None, plan=plan)",
    "ml.DatasetBrowser(ml.curate.synthesize(3, seed=0))",
]
NAMES = ["PlanEditor", "MaskInspector", "RunViewer", "Workbench", "DatasetBrowser"]
VIEW = "application/vnd.jupyter.widget-view+json"


def placeholder(name: str) -> str:
    return f"{name} — rerun the cell to show this widget (its kernel state is gone)"


def _saved_outputs(path) -> list[list[dict]]:
    """The outputs of CELLS as saved (running the last cell added an empty one after it)."""
    return [c.get("outputs", []) for c in json.loads(path.read_text())["cells"]][:len(CELLS)]


def _reopen(browser, lab, name: str):
    """The notebook in a fresh page (a new browser context): nothing run, a new kernel."""
    context, page = open_page(browser)
    return context, Notebook(page, lab, name, None)


def _view_text(nb, i: int) -> str:
    """What cell ``i``'s first output (the widget's view) shows."""
    return nb.cell(i).locator(".jp-OutputArea-output").first.inner_text()


def _pictures(nb):
    return nb.panel.locator(".mv-picture")


def _widget_texts(nb) -> list[str]:
    """The text each widget cell's view output shows, once JupyterLab has settled on it."""
    deadline = time.time() + 60
    while True:
        texts = [_view_text(nb, i).strip() for i in range(1, len(CELLS))]
        if all(t and t != "Loading widget..." for t in texts) or time.time() > deadline:
            return texts
        time.sleep(0.3)


def _save(nb, lab, request, ready) -> Path:
    """Save the notebook (Ctrl+S) and wait until the file on disk passes ``ready``."""
    nb.page.keyboard.press("Control+s")
    path = next(lab.root.glob(f"{request.node.name}*.ipynb"))
    deadline = time.time() + 30
    while not ready(json.loads(path.read_text())):
        assert time.time() < deadline, "the notebook was not saved as expected"
        time.sleep(0.3)
        nb.page.keyboard.press("Control+s")
    return path


def _has_views(saved: dict) -> bool:
    outs = [c.get("outputs", []) for c in saved["cells"]][1:len(CELLS)]
    return all(any(VIEW in o.get("data", {}) for o in cell) for cell in outs)


def test_a_reopened_notebook_says_what_each_widget_was_and_shows_its_picture(
        notebook, browser, lab, request, artifacts):
    nb = notebook(CELLS)
    for i in range(len(CELLS)):
        nb.run(i)
    for cls in ("mv-plan-editor", "mv-mask-inspector", "mv-run-viewer", "mv-workbench", "mv-dataset-browser"):
        nb.panel.locator(f".{cls}").first.wait_for()
    assert _pictures(nb).count() == len(NAMES)  # in the page, but hidden beside the live views
    assert all(not pic.is_visible() for pic in _pictures(nb).all())
    # an edit after the cell ran reaches the saved picture
    nb.cell(1).locator(".mv-plan-editor button", has_text="+ Step").click()
    nb.cell(1).locator(".mv-transition[data-step='4']").wait_for()
    path = _save(nb, lab, request, lambda saved: _has_views(saved) and "plan, 4 steps" in "".join(
        "".join(o.get("data", {}).get("text/html", "")) for o in saved["cells"][1]["outputs"]))
    saved = _saved_outputs(path)
    for outs, name in zip(saved[1:], NAMES):  # what the kernel wrote next to each view
        assert "".join(outs[0]["data"]["text/plain"]) == placeholder(name)
        assert f"{name}: a picture saved with the notebook" in "".join(outs[1]["data"]["text/html"])
    lab.shutdown_kernels()  # the widgets' kernel is gone

    # 1. saved by this JupyterLab, so trusted: the widget manager's own line, and the picture
    context, again = _reopen(browser, lab, path.name)
    try:
        texts = _widget_texts(again)
        assert texts == ["Error displaying widget: model not found"] * len(NAMES)
        pictures = _pictures(again)
        pictures.first.wait_for()
        assert pictures.count() == len(NAMES) and all(pic.is_visible() for pic in pictures.all())
        assert pictures.first.locator("img[alt='Petri net of the plan, 4 steps']").count() == 1
    finally:
        context.close()
        lab.shutdown_kernels()

    # 2. the same file where JupyterLab does not know its signature (sent to a colleague,
    # checked out of a repository): the saved text/plain and the picture (sanitized HTML)
    from nbformat import read
    from nbformat.sign import NotebookNotary

    NotebookNotary().unsign(read(str(path), as_version=4))
    context, shared = _reopen(browser, lab, path.name)
    try:
        assert _widget_texts(shared) == [placeholder(name) for name in NAMES]
        assert shared.panel.locator(".jupyter-widgets", has_text="model not found").count() == 0
        pictures = _pictures(shared)
        assert pictures.count() == len(NAMES) and all(pic.is_visible() for pic in pictures.all())
        assert pictures.nth(0).locator("img[alt='Petri net of the plan, 4 steps']").count() == 1
        assert pictures.nth(1).locator("img").count() == 1  # the mask
        assert "3 of 3 records" in pictures.nth(4).inner_text()
        assert shared.page.js_errors == []
        shared.screenshots(shared.panel.locator(".jp-Notebook"), artifacts / "saved_notebook")
    finally:
        context.close()


SAVE_STATE = Path("@jupyter-widgets/jupyterlab-manager/plugin.jupyterlab-settings")


def test_a_view_drawn_from_saved_widget_state_says_its_kernel_is_gone(notebook, browser, lab, request, artifacts):
    setting = lab.root.parent / "settings" / SAVE_STATE  # the lab fixture's user settings
    setting.parent.mkdir(parents=True, exist_ok=True)
    setting.write_text(json.dumps({"saveState": True}))
    try:
        cells = CELLS[:2] + ["ml.RunViewer(None, question='Which drug first?')"]
        nb = notebook(cells)
        for i in range(len(cells)):
            nb.run(i)
        nb.panel.locator(".mv-run-viewer").wait_for()
        assert nb.panel.locator(".mv-kernel-gone").count() == 0  # a live kernel: no such line
        path = _save(nb, lab, request, lambda saved: "widgets" in saved["metadata"])
        lab.shutdown_kernels()
        context, again = _reopen(browser, lab, path.name)
        try:
            editor, viewer = again.panel.locator(".mv-plan-editor"), again.panel.locator(".mv-run-viewer")
            editor.wait_for()
            viewer.wait_for()
            for view in (editor, viewer):
                view.locator(".mv-kernel-gone").wait_for()
                assert "its kernel is gone" in view.locator(".mv-kernel-gone").inner_text()
            # the controls take no clicks: the plan keeps its three steps
            again.panel.locator(".mv-plan-editor button", has_text="+ Step").click(force=True)
            again.page.wait_for_timeout(1000)
            assert editor.locator(".mv-transition").count() == 3
            assert again.panel.locator(".mv-picture").first.is_visible() is False  # the view is drawn instead
            again.screenshots(editor, artifacts / "saved_state_kernel_gone")
        finally:
            context.close()
    finally:
        setting.unlink()
