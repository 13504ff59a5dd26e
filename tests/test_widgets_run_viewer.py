"""RunViewer's Python side: lanes from a run, critical path and speedup, background runs
that stream into the lanes, reruns with a diff, and the history."""

from __future__ import annotations

import time

import pytest

import medverse_lab as ml
from medverse_lab.widgets.run_viewer import RunViewer, run_summary, word_diff
from conftest import QUESTION as Q

KW = dict(max_step_tokens=6, max_conclusion_tokens=5, temperature=0.7)  # sampled, as these runs were written


@pytest.fixture(scope="module")
def run(engine, plan):
    return engine.run(Q, mode="dag", plan=plan, seed=0, **KW)


class SlowEngine:
    """An engine whose tokens arrive slowly, so a run is still going when submit returns."""

    def __init__(self, engine, delay=0.01):
        self.engine, self.delay = engine, delay
        self.default_mode = engine.default_mode

    def run(self, question, on_token=None, **kw):
        def slow(ev):
            time.sleep(self.delay)
            on_token(ev)
        return self.engine.run(question, on_token=slow, **kw)

    def rerun(self, run, step, on_token=None, **kw):
        return self.engine.rerun(run, step, on_token=on_token, **kw)


def test_word_diff_rebuilds_both_versions():
    old, new = "troponin rises after 3 hours", "troponin rises after 4 to 6 hours"
    ops = word_diff(old, new)
    assert "".join(t for op, t in ops if op != "+") == old
    assert "".join(t for op, t in ops if op != "-") == new
    assert ["-", "3"] in ops and any(op == "+" and "4 to 6" in t for op, t in ops)


def test_summary_counts_forward_calls_against_sequential(run):
    s = run_summary(run)
    assert [lane["branch"] for lane in s["lanes"]] == run.layout.branches
    df = run.tokens
    phase2 = df.filter(df["branch"] != "prefix")
    assert s["phase2_tokens"] == phase2.height
    assert s["forward_calls"] == phase2["forward_call"].n_unique()
    assert s["call_speedup"] == pytest.approx(phase2.height / s["forward_calls"], abs=1e-3)
    assert s["call_speedup"] > 1  # the roots decode side by side
    assert "speedup" not in s and "ideal_speedup" not in s  # one meaning per name: these are call ratios
    lens = {sid: run.layout.step_lens[sid] for sid in run.plan.ids}
    ideal = run.plan.critical_path(lens)[1] + run.layout.conclusion_len
    assert s["ideal_call_speedup"] == pytest.approx(phase2.height / ideal, abs=1e-3)
    assert s["critical_path"][-1] == "5" and s["answer"] == run.answer
    lane = next(lane for lane in s["lanes"] if lane["branch"] == "3")
    assert lane["text"] == run.steps["3"] and lane["label"].startswith("Step 3: ")


def test_a_given_run_is_the_first_history_entry(engine, run):
    viewer = RunViewer(engine, run)
    assert viewer.run is run and viewer.current == 0 and viewer.question == Q
    assert viewer.history[0]["kind"] == "run" and viewer.history[0]["answer"] == run.answer
    assert viewer.summary["call_speedup"] == run_summary(run)["call_speedup"]
    assert viewer.history[0]["call_speedup"] == run_summary(run)["call_speedup"]


def test_submit_returns_at_once_and_the_lanes_grow(engine, plan):
    viewer = RunViewer(SlowEngine(engine), question=Q)
    sizes = []
    viewer.observe(lambda c: sizes.append(sum(lane["tokens"] for lane in c["new"])), names="lanes")
    viewer.submit(plan=plan, **KW)
    assert viewer.busy  # the notebook is free while the engine decodes
    with pytest.raises(RuntimeError, match="in progress"):
        viewer.submit()
    run = viewer.wait(timeout=120)
    assert not viewer.busy and isinstance(run, ml.Run) and run.plan == plan
    growing = [n for n in sizes if n]
    assert len(growing) >= 3 and growing == sorted(growing[:-1]) + growing[-1:]
    assert len(viewer.history) == 1 and viewer.notice.startswith("done")


def test_rerun_with_text_diffs_the_step_and_keeps_the_history(engine, plan):
    viewer = RunViewer(engine, engine.run(Q, mode="dag", plan=plan, seed=0, **KW))
    first = viewer.run
    new = viewer.rerun("2", text="troponin is high", wait=True)
    assert new is viewer.run and viewer.current == 1 and len(viewer.runs) == 2
    assert new.steps["2"].strip() == "troponin is high"
    assert new.steps["1"] == first.steps["1"]  # untouched steps are reused
    assert "2" in viewer.diffs and "1" not in viewer.diffs
    ops = viewer.diffs["2"]
    assert "".join(t for op, t in ops if op != "-") == new.steps["2"]
    assert "".join(t for op, t in ops if op != "+") == first.steps["2"]
    assert viewer.history[1]["kind"] == "rerun" and viewer.history[1]["step"] == "2"
    assert viewer.history[1]["parent"] == 0 and viewer.selected == "2"
    s = viewer.summary  # the speedup of a rerun counts what it decoded again: step 2 and what sees it
    redone = new.tokens.filter(new.tokens["branch"].is_in(["2", "4", "5", "conclusion"]))
    assert s["scope"] == "rerun of step 2" and s["phase2_tokens"] == redone.height
    assert s["forward_calls"] == redone["forward_call"].n_unique()
    # the ideal counts the same branches: the critical path over the re-decoded steps
    lens = {sid: new.layout.step_lens[sid] for sid in ["2", "4", "5"]}
    path, path_len = new.plan.critical_path(lens)
    assert s["critical_path"] == [sid for sid in path if sid in lens] and s["critical_tokens"] == path_len
    assert s["ideal_call_speedup"] == pytest.approx(
        redone.height / (path_len + new.layout.conclusion_len), abs=1e-3)
    assert s["ideal_call_speedup"] >= 1
    viewer.current = 0  # back to the first run: its lanes, no diff
    assert viewer.diffs == {}
    assert next(lane for lane in viewer.lanes if lane["branch"] == "2")["text"] == first.steps["2"]
    viewer.current = 1
    assert "2" in viewer.diffs


def test_rerun_with_a_seed_from_the_view(engine, plan):
    viewer = RunViewer(engine, engine.run(Q, mode="dag", plan=plan, seed=0, **{**KW, "temperature": 1.0}))
    viewer._on_frontend_msg(viewer, {"type": "rerun", "step": "4", "seed": "7"}, [])
    viewer.wait(timeout=120)
    assert viewer.run.seed == 7 and viewer.history[-1]["seed"] == 7
    viewer._on_frontend_msg(viewer, {"type": "rerun", "step": "9"}, [])
    assert "no step" in viewer.notice


def test_view_run_without_a_question_says_so(engine):
    viewer = RunViewer(engine)
    viewer._on_frontend_msg(viewer, {"type": "run", "question": "  "}, [])
    assert "question" in viewer.notice and not viewer.busy and viewer.run is None


def test_a_forced_plan_is_used_by_run(engine, plan):
    viewer = RunViewer(engine, question=Q, plan=plan)
    viewer._on_frontend_msg(viewer, {"type": "run", "question": Q}, [])
    run = viewer.wait(timeout=120)
    assert run.plan == plan and [lane["branch"] for lane in viewer.lanes] == run.layout.branches


@pytest.mark.parametrize("step", ["1", "3", "5"])
def test_the_ideal_of_a_rerun_is_never_below_one(engine, run, step):
    # before: tokens of the rerun over the whole plan's critical path, e.g. 0.88x
    s = run_summary(engine.rerun(run, step, text="troponin is high"))
    assert s["ideal_call_speedup"] >= 1 and s["phase2_tokens"] >= s["critical_tokens"]


def test_no_answer_says_why(engine, plan):
    run = engine.run(Q, mode="dag", plan=plan, seed=0, **KW)  # 5 conclusion tokens: no room for an answer
    assert run.answer is None
    s = run_summary(run)
    assert s["answer"] is None
    assert s["answer_note"] == ('no answer: the conclusion reached its limit of 5 tokens before it named an '
                                'option ("Answer: X")')
    viewer = RunViewer(engine, run)
    viewer.rerun("2", text="troponin is high", wait=True)
    assert viewer.notice.startswith("rerun of step 2 done: no answer: the conclusion reached its limit")
    assert viewer.summary["answer_note"].startswith("no answer: ")


def test_the_seed_box_keeps_its_own_seed_and_chips_show_each_run_s(engine, plan):
    viewer = RunViewer(engine, engine.run(Q, mode="dag", plan=plan, seed=2, **KW))
    assert viewer.seed == 2 == viewer.history[0]["seed"]  # a given run: the box starts at its seed, not 0
    viewer.rerun("4", wait=True)  # no seed: the engine picks run.seed + generation + 1
    assert viewer.run.seed == 3 == viewer.history[1]["seed"] and viewer.seed == 2  # the box is the user's
    viewer.rerun("2", seed=7, wait=True)
    assert viewer.history[2]["seed"] == 7 and viewer.seed == 2
    viewer.current = 0
    assert viewer.seed == 2


def test_a_saved_output_says_how_to_get_the_widget_back(engine, run):
    data, _ = RunViewer(engine, run)._repr_mimebundle_()
    assert data["text/plain"] == "RunViewer — rerun the cell to show this widget (its kernel state is gone)"
    assert "application/vnd.jupyter.widget-view+json" in data


def test_a_rerun_that_changed_nothing_says_so(engine, plan):
    viewer = RunViewer(engine, engine.run(Q, mode="dag", plan=plan, seed=0, **{**KW, "temperature": 0}))
    viewer.rerun("2", seed=5, wait=True)  # greedy: another seed decodes the same text
    assert "step 2 came out identical" in viewer.notice and viewer.diffs == {}
