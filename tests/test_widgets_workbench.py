"""Workbench: questions from a file, a forced plan from the editor, and one selection
shared by the run viewer, the plan editor and the mask inspector."""

from __future__ import annotations

import json

import pytest

import medverse_lab as ml
from medverse_lab.widgets import MaskInspector, Workbench

KW = dict(max_step_tokens=6, max_conclusion_tokens=5)


@pytest.fixture
def questions(tmp_path):
    path = tmp_path / "q.jsonl"
    records = [{"id": "q1", "question": "Chest pain with ST elevation. Next step?",
                "options": {"A": "aspirin", "B": "PCI"}, "answer": "B"},
               {"id": "q2", "question": "Fever and neck stiffness. Next step?",
                "options": {"A": "lumbar puncture", "B": "CT"}, "answer": "A"}]
    path.write_text("\n".join(json.dumps(r) for r in records))
    return path


def test_picking_a_question_fills_the_question_box(engine, questions):
    wb = Workbench(engine, questions=questions)
    assert [label for label, _ in wb.picker.options][1].startswith("q1: Chest pain")
    wb.picker.value = 1
    assert wb.viewer.question == "Fever and neck stiffness. Next step?\nA. lumbar puncture\nB. CT"


def test_run_my_plan_forces_the_edited_plan(engine, plan):
    wb = Workbench(engine, plan=plan)
    assert wb.use_plan.value and wb.viewer.forced_plan == plan
    wb.editor.set_description("1", "ST elevation -> STEMI")
    assert wb.viewer.forced_plan["1"].description == "ST elevation -> STEMI"
    wb.use_plan.value = False
    assert wb.viewer.forced_plan is None


def test_a_run_fills_the_mask_and_the_selection_is_shared(engine, plan):
    wb = Workbench(engine, plan=plan)
    wb.viewer.question = "Chest pain with ST elevation. Next step? A. aspirin B. PCI"
    wb.viewer.submit(**KW)
    run = wb.viewer.wait(timeout=120)
    assert isinstance(wb.inspector, MaskInspector) and wb.inspector.run is run
    assert wb.inspector.T == run.layout.T and wb.inspector.mode == run.mode
    wb.viewer.selected = "2"
    assert wb.editor.selected == "2" and wb.inspector.selected == "2"
    wb.editor.selected = "4"
    assert wb.viewer.selected == "4" and wb.inspector.selected == "4"
    wb.inspector._on_frontend_msg(wb.inspector, {"type": "select", "branch": "3"}, [])
    assert wb.viewer.selected == "3" and wb.editor.selected == "3"
    new = wb.viewer.rerun("3", text="bradycardia", wait=True)
    assert wb.inspector.run is new


def test_the_plan_shown_follows_the_run_when_the_model_plans(engine, plan):
    other = ml.Plan([ml.Step("1", "x")])
    wb = Workbench(engine, plan=other)
    wb.use_plan.value = False
    wb.viewer._add(engine.run("Q? A. a B. b", plan=plan, **KW), {"kind": "run"}, parent=None)
    assert wb.editor.plan == plan


def test_the_checkbox_label_has_room_and_is_text(engine):
    box = Workbench(engine).use_plan
    assert box.layout.width == "auto" and box.style.description_width == "initial"
    assert not box.indent and not box.description_allow_html
    assert "mv-workbench" in Workbench(engine)._dom_classes  # widgets.css: one border around the whole


def test_every_saved_widget_output_says_how_to_get_it_back(engine, plan):
    """A notebook saved with these outputs shows this text where the view cannot be drawn."""
    layout = ml.Layout.from_plan(plan, prefix_len=4, step_lens=3, conclusion_len=2)
    wb = Workbench(engine, plan=plan)
    for widget in (wb, wb.viewer, wb.editor, MaskInspector(layout), ml.DatasetBrowser(ml.curate.synthesize(2, seed=0))):
        bundle = widget._repr_mimebundle_()
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        name = type(widget).__name__
        assert data["text/plain"] == f"{name} — rerun the cell to show this widget (its kernel state is gone)"
        assert "application/vnd.jupyter.widget-view+json" in data
