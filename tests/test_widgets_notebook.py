"""The tour notebook runs top to bottom in a headless kernel and shows every widget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TOUR = Path(__file__).resolve().parents[1] / "notebooks" / "01_tour.ipynb"


@pytest.mark.slow
def test_the_tour_runs_headless(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(TOUR, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    views = [o["data"]["application/vnd.jupyter.widget-view+json"] for c in nb.cells if c.cell_type == "code"
             for o in c.outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(views) >= 7  # editor, inspectors, viewer, workbench, the magics' editor and viewer
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "x against sequential" in text and "re-decoded: ['2'" in text
    everything = json.dumps([o for c in nb.cells if c.cell_type == "code" for o in c.outputs])
    assert "Loading weights" not in everything  # no load bar in the notebook (Engine.load turns it off)
