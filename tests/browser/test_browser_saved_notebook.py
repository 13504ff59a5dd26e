"""A saved notebook with widget outputs, reopened in a new page after its kernel is gone.

A widget's saved output holds the view (a model id only the kernel that made it knew)
and a ``text/plain`` fallback. What a reopened notebook shows depends on trust:

- a notebook the user received (another machine, a repository: JupyterLab does not
  trust it) is drawn with the ``text/plain``: each widget's placeholder says what it was
  and to rerun the cell;
- a notebook JupyterLab saved itself is trusted: its widget manager picks the view, finds
  no model and writes its own "Error displaying widget: model not found" (and logs the
  error); no text from the kernel side can replace that line.
"""

from __future__ import annotations

import json
import time

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


def _widget_texts(nb) -> list[str]:
    """The text each widget cell's output shows, once JupyterLab has settled on it."""
    deadline = time.time() + 60
    while True:
        texts = [nb.output(i).strip() for i in range(1, len(CELLS))]
        if all(t and t != "Loading widget..." for t in texts) or time.time() > deadline:
            return texts
        time.sleep(0.3)


def test_a_reopened_notebook_says_what_each_widget_was(notebook, browser, lab, request, artifacts):
    nb = notebook(CELLS)
    for i in range(len(CELLS)):
        nb.run(i)
    for cls in ("mv-plan-editor", "mv-mask-inspector", "mv-run-viewer", "mv-workbench", "mv-dataset-browser"):
        nb.panel.locator(f".{cls}").first.wait_for()
    nb.page.keyboard.press("Control+s")
    path = next(lab.root.glob(f"{request.node.name}*.ipynb"))
    deadline = time.time() + 30
    while not all(any(VIEW in o.get("data", {}) for o in outs) for outs in _saved_outputs(path)[1:]):
        assert time.time() < deadline, "the notebook was not saved with its widget outputs"
        time.sleep(0.3)
    saved = _saved_outputs(path)
    for outs, name in zip(saved[1:], NAMES):  # what the kernel wrote next to each view
        assert "".join(outs[0]["data"]["text/plain"]) == placeholder(name)
    lab.shutdown_kernels()  # the widgets' kernel is gone

    # 1. saved by this JupyterLab, so trusted: the widget manager's own line, not a blank
    context, again = _reopen(browser, lab, path.name)
    try:
        texts = _widget_texts(again)
        assert texts == ["Error displaying widget: model not found"] * len(NAMES)
    finally:
        context.close()
        lab.shutdown_kernels()

    # 2. the same file where JupyterLab does not know its signature (sent to a colleague,
    # checked out of a repository): the saved text/plain is what shows
    from nbformat import read
    from nbformat.sign import NotebookNotary

    NotebookNotary().unsign(read(str(path), as_version=4))
    context, shared = _reopen(browser, lab, path.name)
    try:
        assert _widget_texts(shared) == [placeholder(name) for name in NAMES]
        assert shared.panel.locator(".jupyter-widgets", has_text="model not found").count() == 0
        assert shared.page.js_errors == []
        shared.screenshots(shared.panel.locator(".jp-Notebook"), artifacts / "saved_notebook")
    finally:
        context.close()
