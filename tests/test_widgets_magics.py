"""The IPython magics: %medverse run shows a RunViewer; %%medverse_plan opens a
PlanEditor or shows the PlanError."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell

from medverse_lab.widgets import PlanEditor, RunViewer

OUTLINE = """<Outline> Transient Step 1: chest pain + ST elevation -> STEMI; Dependency: [] </Outline>
<Outline> Transient Step 2: troponin rise -> necrosis; Dependency: [] </Outline>
<Outline> Transient Step 3: STEMI + necrosis -> primary PCI; Dependency: [1, 2] </Outline>"""


@pytest.fixture(scope="module")
def shell(engine):
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "medverse_lab")
    sh.user_ns["eng"] = engine
    return sh


def test_medverse_plan_opens_an_editor_and_names_it(shell):
    editor = shell.run_cell_magic("medverse_plan", "ed", OUTLINE)
    assert isinstance(editor, PlanEditor) and shell.user_ns["ed"] is editor
    assert editor.plan.ids == ["1", "2", "3"] and editor.plan["3"].deps == ("1", "2")


def test_medverse_plan_shows_the_plan_error(shell, capsys):
    assert shell.run_cell_magic("medverse_plan", "", "Transient Step 1: oops, no dependency list") is None
    assert "bad-outline" in capsys.readouterr().out


def test_medverse_run_decodes_in_a_run_viewer(shell):
    shell.run_cell_magic("medverse_plan", "ed", OUTLINE)
    viewer = shell.run_line_magic(
        "medverse", 'run "Chest pain, ST elevation: next step? A. aspirin B. PCI" --mode layered --seed 3 '
                    "--max-step-tokens 5 --engine eng --plan ed")
    assert isinstance(viewer, RunViewer)
    run = viewer.wait(timeout=120)
    assert run.mode == "layered" and run.seed == 3 and run.plan == shell.user_ns["ed"].plan
    assert run.question.startswith("Chest pain")


def test_medverse_run_explains_bad_arguments(shell, capsys):
    assert shell.run_line_magic("medverse", 'run "q" --mode medverse-sft --engine eng') is None
    assert "invalid choice" in capsys.readouterr().out
    assert shell.run_line_magic("medverse", 'run "q" --engine nothing_here') is None
    assert "no variable 'nothing_here'" in capsys.readouterr().out
