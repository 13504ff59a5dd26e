"""Mode ``request``: each step is decoded as the continuation of one linear token sequence
(prefix + its ancestors' blocks + its header), the conclusion of prefix + every block,
so a stock serving engine reproduces a run exactly. Held here against a plain causal
``model.generate`` of each request, on random models and on the teaching model."""

from __future__ import annotations

import pytest
import torch

import medverse_lab as ml
from medverse_lab.engine import TokenEvent
from medverse_lab.engine import Engine, default_model_path

from conftest import QUESTION as Q, tiny_model
from test_engine import assert_exact

DIAMOND = ml.Plan([ml.Step("1", "chest pain -> ischemia"), ml.Step("2", "troponin -> necrosis"),
                   ml.Step("3", "ischemia + necrosis -> infarction", deps=["1", "2"]),
                   ml.Step("4", "infarction -> PCI", deps=["3"]), ml.Step("5", "fever -> infection")])


def assert_requests_equal_generate(engine, run):
    """Each branch's sampled tokens equal greedy ``generate`` on its request, plain causal
    from position 0: no mask, no position ids, nothing but the token sequence."""
    model, checked = engine.model, 0
    pad = engine.tokenizer.pad_token_id if engine.tokenizer.pad_token_id is not None else engine.tokenizer.eos_token_id
    for branch, (context, sampled) in run.requests().items():
        if not sampled:
            continue
        with torch.no_grad():
            out = model.generate(torch.tensor([context], device=engine.device), max_new_tokens=len(sampled),
                                 min_new_tokens=len(sampled), do_sample=False, pad_token_id=pad)
        assert out[0, len(context):].tolist() == sampled, f"branch {branch} differs from generate on its request"
        checked += len(sampled)
    assert checked, "the run sampled nothing"
    return checked


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_each_request_equals_plain_generate_on_random_models(tokenizer, family):
    engine = Engine(tiny_model(family, len(tokenizer), seed=3), tokenizer)
    run = engine.run(Q, mode="request", plan=DIAMOND, temperature=0, max_step_tokens=12, max_conclusion_tokens=12)
    assert run.layout.repeats["3"] == ("1", "2") and run.layout.repeats["4"] == ("1", "2", "3")
    assert_exact(engine, run)                      # one teacher-forced forward over the request layout
    assert_requests_equal_generate(engine, run)    # and each request alone, as a stock engine decodes it
    assert ml.parse_trace(run.text).plan == DIAMOND  # the text is the trace, each block once
    with pytest.raises(ValueError, match="only a 'request' run"):
        engine.run(Q, mode="dag", plan=DIAMOND, temperature=0, max_step_tokens=2, max_conclusion_tokens=2).requests()


def test_the_request_layout_repeats_blocks_exactly_as_decoded(engine):
    run = engine.run(Q, mode="request", plan=DIAMOND, temperature=0, max_step_tokens=6, max_conclusion_tokens=6)
    ids, layout = run.layout.token_ids, run.layout
    own = {s: ids[layout.own_start(s):layout.segment(s).stop] for s in DIAMOND.ids}
    for branch in [*DIAMOND.ids, "conclusion"]:
        for r, a, z in layout.repeated_spans(branch):
            assert ids[a:z] == own[r]
    df = run.tokens
    repeated = df.filter(df["repeat_of"].is_not_null())
    assert repeated["forced"].all()
    assert len(repeated) == sum(len(own[r]) for b in layout.repeats for r in layout.repeats[b])
    # the steps are scheduled as dag: 3 after 1 and 2, 5 with the roots
    start = {e.branch: e.forward_call for e in run.events if isinstance(e, ml.engine.StepStart)}
    assert start["1"] == start["2"] == start["5"] < start["3"] < start["4"]


def test_run_viewer_counts_a_requests_own_tokens(engine):
    from medverse_lab.widgets.run_viewer import run_summary

    run = engine.run(Q, mode="request", plan=DIAMOND, temperature=0, max_step_tokens=6, max_conclusion_tokens=6)
    lanes = {lane["branch"]: lane for lane in run_summary(run)["lanes"]}
    layout = run.layout
    assert lanes["3"]["repeated"] == layout.step_lens["1"] + layout.step_lens["2"]
    assert lanes["3"]["tokens"] == layout.step_lens["3"] and lanes["1"]["repeated"] == 0
    assert lanes["conclusion"]["repeated"] == sum(layout.step_lens.values())
    assert sum(lane["tokens"] + lane["repeated"] for lane in lanes.values()) == layout.T


def test_streaming_and_rerun_in_request_mode(engine):
    kw = dict(mode="request", plan=DIAMOND, temperature=0, max_step_tokens=6, max_conclusion_tokens=6)
    stream = engine.stream(Q, **kw)
    events = list(stream)
    run = stream.run
    assert run.layout.token_ids == engine.run(Q, **kw).layout.token_ids
    df = run.tokens
    for branch in ("3", "conclusion"):  # a branch streams its header and body; the blocks it repeats are context
        rows = df.filter(df["branch"] == branch)
        assert rows["repeat_of"].is_not_null().any()
        streamed = [e.token_id for e in events if isinstance(e, TokenEvent) and e.branch == branch]
        assert streamed == rows.filter(rows["repeat_of"].is_null())["token_id"].to_list()
    new = engine.rerun(run, "2", seed=5, text="A forced finding.\n")
    assert set(new.rerun_event.dropped) == {"2", "3", "4"}  # its descendants repeat it: decoded again
    assert new.steps["2"] == "A forced finding.\n"
    assert new.steps["1"] == run.steps["1"] and new.steps["5"] == run.steps["5"]
    assert_exact(engine, new)
    assert_requests_equal_generate(engine, new)


@pytest.mark.slow
@pytest.mark.skipif(default_model_path() is None, reason="the teaching model is not shipped")
def test_teaching_model_runs_are_its_requests_decoded_by_generate():
    """Model-written plans on held-out questions: every step and conclusion the engine
    samples in ``request`` mode is what plain ``generate`` writes for that request."""
    from medverse_lab.data.curate import make_questions
    from medverse_lab.data.questions import format_question

    engine = Engine.load()
    questions = [format_question(q) for q in make_questions(4, seed=11, split="test")]
    total = 0
    for run in engine.run_many(questions, mode="request", temperature=0, batch_size=4, keep_cache=True):
        assert run.mode == "request" and run.plan_error is None
        assert_exact(engine, run)
        total += assert_requests_equal_generate(engine, run)
    assert total > 100


def test_train_mode_request_from_the_command_line(tmp_path):
    """``medverse-lab train --mode request``: the checkpoint records the mode and the engine
    decodes it by default."""
    import subprocess
    import sys

    from medverse_lab.data.records import write_jsonl
    from test_train import records

    data = write_jsonl(records(24), tmp_path / "train.jsonl")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "medverse_lab.cli", "train", "--out", str(out), "--data", str(data), "--mode", "request",
           "--steps", "4", "--vocab-size", "300", "--hidden-size", "32", "--num-layers", "2", "--num-heads", "4",
           "--num-kv-heads", "2", "--intermediate-size", "64", "--batch-size", "4", "--eval-every", "2",
           "--save-every", "4", "--max-len", "1024"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "`request`" in (out / "README.md").read_text()
    engine = Engine.load(out)
    assert engine.default_mode == "request"
    run = engine.run(Q, plan=DIAMOND, temperature=0, max_step_tokens=4, max_conclusion_tokens=4)
    assert run.mode == "request" and run.layout.expanded
    assert_exact(engine, run)


@pytest.mark.skipif(default_model_path() is None, reason="the teaching model is not shipped")
def test_command_line_run_in_request_mode_reports_each_step_once():
    import re
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "medverse_lab.cli", "run", "--mode", "request", "--no-compare"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    finished = re.findall(r"step (\d+) done:", done.stdout)
    planned = re.findall(r"^  (\d+)\. ", done.stdout, flags=re.M)
    assert planned and sorted(finished, key=int) == planned  # a repeated </Step> is not a step ending
    assert "Mode request" in done.stdout and re.search(r"^Answer: [A-J]$", done.stdout, flags=re.M)


@pytest.mark.skipif(default_model_path("request") is None, reason="the request teaching model is not shipped")
def test_the_shipped_request_model_decodes_request_by_default_and_answers():
    from medverse_lab.data.curate import make_questions
    from medverse_lab.data.questions import format_question

    path = default_model_path("request")
    assert path.name == "teaching-model-request" and not list(path.glob("*.pt")) and not list(path.glob("*.bin"))
    engine = Engine.load(path)
    assert engine.default_mode == "request"
    q = make_questions(3, seed=1, split="test")[0]
    run = engine.run(format_question(q), temperature=0)
    assert run.mode == "request" and run.plan_error is None and run.layout.expanded
    assert run.answer in q.options
    with pytest.raises(ValueError, match="shipped: dag, request"):
        default_model_path("layered")
