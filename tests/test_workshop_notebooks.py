"""Every workshop notebook (02 onwards) runs top to bottom in a headless kernel, and its
exercise checks pass. ``MEDVERSE_WORKSHOP_QUICK=1`` asks a notebook to keep its training
and sweeps to smoke size (a notebook reads it in its first cell)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import medverse_lab as ml

NOTEBOOKS = sorted(p for p in (Path(__file__).resolve().parents[1] / "notebooks").glob("0*.ipynb")
                   if not p.name.startswith("01_"))


def execute(path: Path, cwd: Path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    os.environ["MEDVERSE_WORKSHOP_QUICK"] = "1"
    try:
        NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    finally:
        os.environ.pop("MEDVERSE_WORKSHOP_QUICK", None)
    return nb


def outputs(nb, kind: str):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == kind]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_workshop_notebook_runs_and_its_exercises_pass(path, tmp_path):
    nb = execute(path, tmp_path)
    assert outputs(nb, "error") == []
    text = "\n".join([o.get("text", "") for o in outputs(nb, "stream")]
                     + [o.get("data", {}).get("text/plain", "") for o in outputs(nb, "display_data")])
    assert text.count("✓") >= 2, "a workshop notebook ends with exercises that it checks"
    assert "✗" not in text, "every exercise check passes with the notebook's own answers"
    last_code = [c for c in nb.cells if c.cell_type == "code"][-1]
    assert "workshop.check" in "".join(c.source for c in nb.cells if c.cell_type == "code")
    assert last_code.outputs, "the last cell shows something"


def test_there_are_four_workshop_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["02", "03", "04", "05"]


def test_check_says_what_is_wrong_and_never_raises(capsys):
    assert ml.workshop.check("sum", 1 + 1, 2)
    wrong = ml.workshop.check("pos", 3, 4, hint="count from 0")
    assert not wrong and repr(wrong) == "✗ pos: 3 is not it. Hint: count from 0"
    assert 'class="mv-verdict mv-fail"' in wrong._repr_html_()
    assert "not answered yet" in repr(ml.workshop.check("todo", ..., 4))
    typed = ml.workshop.check("steps", ("1", "2"), ["1", "2"])
    assert not typed and "the type differs: a tuple, where a list is asked" in repr(typed)
    import torch

    assert ml.workshop.check("tensor", torch.tensor([1, 2]), [1, 2])
    assert not ml.workshop.check("shape", torch.ones(2), torch.ones(3))
    assert ml.workshop.check("float", 0.1 + 0.2, 0.3)
    assert "✓ sum" in capsys.readouterr().out  # shown when made (outside a notebook: printed)
    assert "<b>" not in ml.workshop.check("x", "<b>bold</b>", "")._repr_html_()  # the answer is text
