"""Saved notebooks stay readable: every widget's output carries an HTML picture of its state.

A notebook is executed in a real kernel (nbclient, which applies ``update_display_data``
as JupyterLab does), then converted with nbconvert's HTML exporter as nbviewer and
GitHub readers get it: no widget state, so what shows is the picture beside each view.
"""

from __future__ import annotations

import re

import pytest

VIEW = "application/vnd.jupyter.widget-view+json"
EVIL = "<img src=x onerror=alert(1)>"


def _execute(cells: list[str]):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    errors = [o for c in nb.cells for o in c.outputs if o.output_type == "error"]
    assert errors == [], errors
    return nb


def _pictures(cell) -> list[str]:
    return ["".join(o["data"]["text/html"]) for o in cell.outputs
            if "text/html" in o.get("data", {}) and "mv-picture" in "".join(o["data"]["text/html"])]


def _svg_texts(html: str) -> list[str]:
    """The texts of the SVG image in a picture (parsed as XML, so it must be well formed)."""
    import base64
    import xml.etree.ElementTree as ET

    data = re.search(r'src="data:image/svg\+xml;base64,([^"]+)"', html).group(1)
    root = ET.fromstring(base64.b64decode(data))
    return [el.text for el in root.iter() if el.text]


SETUP = f"""\
import medverse_lab as ml
plan = ml.Plan([ml.Step("1", "History"), ml.Step("2", {EVIL!r}), ml.Step("3", "Decide", ["1", "2"])])
layout = ml.Layout.from_plan(plan, prefix_len=6, step_lens=4, conclusion_len=3)"""


@pytest.mark.slow
def test_each_widget_saves_a_picture_of_what_it_shows_with_untrusted_text_escaped():
    nb = _execute([SETUP, "ml.PlanEditor(plan)", "ml.MaskInspector(layout)", "ml.RunViewer(None, question='Which?')",
                   "ml.Workbench(None, plan=plan)", "ml.DatasetBrowser(ml.curate.synthesize(3, seed=0))"])
    for cell in nb.cells[1:]:
        assert any(VIEW in o.get("data", {}) for o in cell.outputs)  # the live view is still there
        assert len(_pictures(cell)) == 1
    editor, mask, viewer, bench, browser = (_pictures(c)[0] for c in nb.cells[1:])
    assert "Valid plan" in editor and "Petri net of the plan, 3 steps" in editor
    net = _svg_texts(editor)
    assert "Step 3" in net and f"Step 2: {EVIL}" in net  # the description as text (its tooltip): never markup
    assert EVIL not in editor
    assert "mode <b>dag</b>: 21 tokens" in mask and "data:image/png;base64," in mask
    assert "Which?" in viewer and "No run yet." in viewer
    assert "Step 3" in _svg_texts(bench) and "<h4>Plan</h4>" in bench
    assert "3 of 3 records" in browser


@pytest.mark.slow
def test_the_picture_follows_changes_made_after_the_widget_was_shown():
    nb = _execute([SETUP, "editor = ml.PlanEditor(plan)\neditor",
                   "import time\neditor.plan = ml.Plan([ml.Step('1', 'Only step'), ml.Step('2', 'Next', ['9'])])\n"
                   "time.sleep(1)"])  # the picture redraws once a burst of changes settles
    picture = _pictures(nb.cells[1])[0]
    assert "Only step" in _svg_texts(picture) and "History" not in _svg_texts(picture)
    assert "problem" in picture and "Valid plan" not in picture


@pytest.mark.slow
def test_nbconvert_html_shows_the_pictures_where_no_widget_state_was_saved():
    from nbconvert import HTMLExporter

    nb = _execute([SETUP, "ml.PlanEditor(plan)", "ml.MaskInspector(layout, mode='layered')"])
    nb.metadata.pop("widgets", None)  # as JupyterLab saves by default: no widget state
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert html.count('class="mv-picture"') == 2
    assert "PlanEditor — rerun the cell to show this widget" in html
    assert "mode <b>layered</b>" in html
    assert EVIL not in html


def test_a_backward_dependency_is_drawn_under_the_net():
    import medverse_lab as ml
    from medverse_lab.widgets.picture import plan_svg

    draft = ml.Plan([ml.Step("1", "a", ["2"]), ml.Step("2", "b")])  # step 1 needs step 2, drawn right of it
    graph = ml.widgets.petri_layout(draft)
    back = [a for a in graph["arcs"] if a.get("back")]
    assert [(a["from"], a["to"]) for a in back] == [("p1", "t0")]
    svg = plan_svg(graph)
    bottom = 34 + (graph["rows"] - 1) * 66 + 44 / 2
    below = [float(v) for v in re.findall(r"L[\d.]+,([\d.]+)", svg)]
    assert below and all(v > bottom for v in below)  # the horizontal run passes under every box
