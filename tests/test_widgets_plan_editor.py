"""PlanEditor's Python side: edits, live validation, the last valid plan, undo/redo,
the Petri-net drawing and marking, and the commands the view sends."""

from __future__ import annotations

import json

import pytest

import medverse_lab as ml
from medverse_lab.widgets.plan_editor import PlanEditor, petri_layout
from conftest import QUESTION as Q


@pytest.fixture
def plan():
    return ml.Plan([ml.Step("1", "chest pain + ST elevation -> STEMI"), ml.Step("2", "troponin rise -> necrosis"),
                    ml.Step("3", "STEMI + necrosis -> primary PCI", ["1", "2"])])


def draft_ids(editor):
    return [s["id"] for s in editor.draft["steps"]]


def kinds(editor):
    return [e["kind"] for e in editor.errors]


def test_starts_with_the_plan_valid_and_marked_at_the_source(plan):
    editor = PlanEditor(plan)
    assert editor.plan == plan and editor.errors == []
    assert ml.Plan.from_json(json.dumps(editor.valid_plan)) == plan
    assert editor.marking == {"source": 1, "done:1": 0, "done:2": 0, "done:3": 0}
    assert editor.frontier == ["1", "2"]


def test_accepts_outline_text():
    editor = PlanEditor("Transient Step 1: a -> b; Dependency: []\nTransient Step 2: b -> c; Dependency: [1]")
    assert editor.plan.ids == ["1", "2"] and editor.plan["2"].deps == ("1",)


def test_add_step_numbers_past_the_highest(plan):
    editor = PlanEditor(plan)
    assert editor.add_step("PCI -> reperfusion", deps=["3"]) == "4"
    assert editor.plan.ids == ["1", "2", "3", "4"] and editor.plan["4"].deps == ("3",)


def test_an_invalid_edit_shows_problems_at_the_step_and_keeps_the_last_valid_plan(plan):
    editor = PlanEditor(plan)
    editor.toggle_dependency("3", "1")  # step 1 now depends on the later step 3: a cycle
    assert "cycle" in kinds(editor)
    assert {e["step"] for e in editor.errors} == {"1"}
    assert editor.plan == plan
    assert editor.draft["steps"][0]["deps"] == ["3"]
    editor.toggle_dependency("3", "1")
    assert editor.errors == [] and editor.plan == plan


def test_a_forward_dependency_is_fixed_by_renumbering():
    editor = PlanEditor(ml.Plan([ml.Step("1", "a"), ml.Step("2", "b")]))
    editor.toggle_dependency("2", "1")
    assert kinds(editor) == ["forward-dependency"]
    editor.renumber()
    assert editor.errors == []
    assert editor.plan == ml.Plan([ml.Step("1", "b"), ml.Step("2", "a", ["1"])])


def test_remove_step_drops_the_dependencies_on_it(plan):
    editor = PlanEditor(plan)
    editor.remove_step("2")
    assert editor.plan.ids == ["1", "3"] and editor.plan["3"].deps == ("1",)


def test_removing_every_step_is_an_empty_plan_problem(plan):
    editor = PlanEditor(ml.Plan([ml.Step("1", "only")]))
    editor.remove_step("1")
    assert kinds(editor) == ["empty-plan"]
    assert editor.plan.ids == ["1"]


def test_rename_carries_the_dependencies_along(plan):
    editor = PlanEditor(plan)
    editor.rename_step("3", "7")
    assert editor.plan.ids == ["1", "2", "7"] and editor.plan["7"].deps == ("1", "2")
    editor.rename_step("1", "5")  # 5 before 2: step order problem, plan unchanged
    assert "step-order" in kinds(editor) and editor.plan.ids == ["1", "2", "7"]
    with pytest.raises(ValueError, match="already exists"):
        editor.rename_step("2", "7")


def test_set_description_updates_the_plan_and_the_drawing(plan):
    editor = PlanEditor(plan)
    editor.set_description("2", "CK-MB rise -> necrosis")
    assert editor.plan["2"].description == "CK-MB rise -> necrosis"
    node = next(n for n in editor.graph["nodes"] if n["kind"] == "transition" and n["step"] == "2")
    assert node["description"] == "CK-MB rise -> necrosis"


def test_undo_and_redo_walk_the_edits(plan):
    editor = PlanEditor(plan)
    assert not editor.can_undo
    editor.add_step("x")
    editor.set_description("4", "y")
    assert editor.can_undo
    assert editor.undo() and editor.plan["4"].description == "x"
    assert editor.undo() and editor.plan == plan
    assert not editor.undo() and not editor.can_undo and editor.can_redo
    assert editor.redo() and draft_ids(editor) == ["1", "2", "3", "4"]
    editor.remove_step("1")  # a new edit forgets what could be redone
    assert not editor.can_redo and not editor.redo()


def test_undo_restores_the_valid_plan_after_an_invalid_edit(plan):
    editor = PlanEditor(plan)
    editor.toggle_dependency("3", "1")
    assert editor.errors
    editor.undo()
    assert editor.errors == [] and editor.plan == plan


def test_setting_plan_replaces_the_draft_undoably(plan):
    editor = PlanEditor(plan)
    other = ml.Plan([ml.Step("1", "z")])
    editor.plan = other
    assert editor.plan == other and editor.can_undo
    editor.undo()
    assert editor.plan == plan


def test_layout_puts_places_and_transitions_in_level_columns(plan):
    graph = petri_layout(plan)
    by_key = {n["key"]: n for n in graph["nodes"]}
    assert by_key["source"]["col"] == 0
    assert [by_key[f"t{i}"]["col"] for i in range(3)] == [1, 1, 3]
    assert [by_key[f"p{i}"]["col"] for i in range(3)] == [2, 2, 4]
    assert by_key["t0"]["row"] != by_key["t1"]["row"]
    arcs = {(a["from"], a["to"]) for a in graph["arcs"]}
    assert arcs == {("source", "t0"), ("source", "t1"), ("t0", "p0"), ("t1", "p1"), ("t2", "p2"),
                    ("p0", "t2"), ("p1", "t2")}
    assert graph["cols"] == 5 and graph["rows"] == 2


def test_layout_draws_invalid_drafts_too():
    draft = ml.Plan([ml.Step("1", "a", ["2"]), ml.Step("2", "b", ["1"]), ml.Step("2", "dup"), ml.Step("4", "c", ["9"])])
    graph = petri_layout(draft)
    assert len([n for n in graph["nodes"] if n["kind"] == "transition"]) == 4
    assert ("p0", "t1") in {(a["from"], a["to"]) for a in graph["arcs"]}


def test_marking_fires_wave_by_wave(plan):
    editor = PlanEditor(plan)
    assert editor.fire_frontier() == ["1", "2"]
    assert editor.marking["done:1"] == 1 and editor.frontier == ["3"]
    editor.fire("3")
    assert editor.fired == ["1", "2", "3"] and editor.frontier == []
    editor.reset_marking()
    assert editor.fired == [] and editor.frontier == ["1", "2"]
    with pytest.raises(ml.PetriNetError):
        editor.fire("3")


def test_view_commands_edit_and_report_refusals(plan):
    editor = PlanEditor(plan)
    msg = lambda op, **args: editor._on_frontend_msg(editor, {"type": "edit", "op": op, "args": args}, [])
    msg("add", description="new")
    assert editor.selected == "4" and draft_ids(editor) == ["1", "2", "3", "4"]
    msg("toggle", dependency="3", step="4")
    assert editor.plan["4"].deps == ("3",)
    msg("describe", step="4", description="PCI -> reperfusion")
    msg("rename", step="4", new="2")
    assert "already exists" in editor.notice and editor.plan["4"].description == "PCI -> reperfusion"
    msg("undo")
    assert editor.plan["4"].description == "new"
    msg("redo")
    msg("remove", step="4")
    assert editor.plan == plan
    msg("fire")
    assert editor.fired == ["1", "2"]
    msg("run", question="q")
    assert "no engine" in editor.notice


def test_untrusted_descriptions_stay_text_in_the_state():
    evil = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    editor = PlanEditor(ml.Plan([ml.Step("1", evil)]))
    assert editor.plan["1"].description == evil
    assert editor.draft["steps"][0]["description"] == evil


def test_two_editors_do_not_share_state(plan):
    a, b = PlanEditor(plan), PlanEditor(plan)
    a.add_step("only in a")
    assert b.plan == plan and not b.can_undo


# ----- with an engine ----------------------------------------------------------------------

def test_run_fires_the_frontier_as_steps_finish(engine, example_text):
    plan = ml.parse_trace(example_text).plan
    editor = PlanEditor(plan, engine=engine, question=Q)
    assert editor.has_engine
    seen_running, seen_fired = [], []
    editor.observe(lambda c: seen_running.append(list(c["new"])), names="running")
    editor.observe(lambda c: seen_fired.append(list(c["new"])), names="fired")
    run = editor.run(wait=True, mode="dag", max_step_tokens=5, max_conclusion_tokens=5)
    assert isinstance(run, ml.Run) and run.plan == plan and editor.last_run is run
    assert sorted(editor.fired) == sorted(plan.ids) and editor.frontier == [] and not editor.busy
    # fired in the order the steps finished, which respects every dependency
    assert all(editor.fired.index(d) < editor.fired.index(s.id) for s in plan.steps for d in s.deps)
    assert editor.notice.startswith("done")
    # the roots decode side by side, and the drawing fires step by step, not all at the end
    assert max(len(r) for r in seen_running) >= 2
    assert [len(f) for f in seen_fired if f][:2] == [1, 2]


def test_run_button_without_a_question_says_so(engine, plan):
    editor = PlanEditor(plan, engine=engine)
    editor._on_frontend_msg(editor, {"type": "edit", "op": "run", "args": {"question": ""}}, [])
    assert "question" in editor.notice and not editor.busy


def test_edits_are_refused_while_running(engine, plan):
    editor = PlanEditor(plan, engine=engine, question=Q)
    editor.busy = True
    with pytest.raises(RuntimeError, match="running"):
        editor.add_step("x")
    assert not editor.undo()


def test_an_empty_plan_can_be_edited_but_not_fired():
    editor = PlanEditor(ml.Plan([]))
    assert editor.plan is None and [e["kind"] for e in editor.errors] == ["empty-plan"]
    with pytest.raises(RuntimeError, match="no valid plan"):
        editor.fire_frontier()
    editor._on_frontend_msg(editor, {"type": "edit", "op": "fire", "args": {}}, [])
    assert "no valid plan" in editor.notice
    editor.add_step("a -> b")
    assert editor.plan.ids == ["1"] and editor.frontier == ["1"]
