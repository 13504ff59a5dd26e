"""Workshop exercises in a real JupyterLab: a wrong answer shows a styled ✗ with its hint,
no traceback and no stray ``True``; a right value of another type says the type differs."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

CELLS = [
    "import medverse_lab as ml\nml.workshop.check('ex1: the frontier', ['1', '3'], ['1', '2', '3'], "
    "hint='a step fires once its parents have')",
    "ml.workshop.check('ex2: the frontier', ('1', '2', '3'), ['1', '2', '3'])",
    "ml.workshop.check('ex3: the frontier', ['1', '2', '3'], ['1', '2', '3'])",
]


def test_exercise_verdicts_are_styled_and_never_a_traceback(notebook, artifacts):
    nb = notebook(CELLS)
    wrong, typed, right = nb.run(0), nb.run(1), nb.run(2)
    assert wrong == "✗ ex1: the frontier: ['1', '3'] is not it. Hint: a step fires once its parents have"
    assert typed == "✗ ex2: the frontier: the values are right, but the type differs: a tuple, where a list is asked."
    assert right == "✓ ex3: the frontier"  # and nothing after it: no Out[] echo of True
    for i in range(3):
        cell = nb.cell(i)
        assert cell.locator(".jp-OutputArea-output").count() == 1
        assert cell.locator("[data-mime-type='application/vnd.jupyter.stderr']").count() == 0  # no traceback
    fail = nb.cell(0).locator(".mv-verdict.mv-fail")
    ok = nb.cell(2).locator(".mv-verdict.mv-pass")
    assert fail.evaluate("e => getComputedStyle(e).color") != ok.evaluate("e => getComputedStyle(e).color")
    nb.screenshots(nb.panel.locator(".jp-Notebook"), artifacts / "exercises")
    assert nb.page.js_errors == []
