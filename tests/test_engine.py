"""The engine on real (tiny, random) Qwen2 and Llama models: exactness against one
teacher-forced forward, schedulers, streaming, rerun, seeds, loading and errors."""

from __future__ import annotations

from contextlib import contextmanager

import polars as pl
import pytest
import torch

import medverse_lab as ml
from medverse_lab.engine import Engine, ForcedClose, PlanRejected, Run, StepStart, TokenEvent, default_model_path, parse_answer

from conftest import QUESTION as Q, tiny_model

MODES = ("dag", "layered", "speculative", "sequential", "request")
KW = dict(max_step_tokens=5, max_conclusion_tokens=5)


@pytest.fixture(scope="module")
def engines(tokenizer):
    made = {}

    def get(family="qwen2", attn="sdpa"):
        if (family, attn) not in made:
            made[family, attn] = Engine(tiny_model(family, len(tokenizer), attn), tokenizer)
        return made[family, attn]

    return get


@contextmanager
def recording(model):
    """Wrap the model's forward (the real one still runs) to record, per call, the input ids
    and the logits as a dict: index within the call's input -> logits row (the engine asks
    only for the rows it samples from, with ``logits_to_keep``)."""
    calls, real = [], model.forward

    def forward(*args, **kwargs):
        out = real(*args, **kwargs)
        ids, keep = kwargs["input_ids"], kwargs.get("logits_to_keep")
        keep = range(ids.shape[1]) if keep is None else keep.tolist()
        calls.append((ids.detach().clone(), dict(zip(keep, out.logits[0].detach().clone()))))
        return out

    model.forward = forward
    try:
        yield calls
    finally:
        del model.forward


def teacher_forced(engine, layout, mode, positions=None):
    """Logits ``[T, V]`` of one forward over the whole run with the library's mask and positions."""
    mask = ml.attention_mask(layout, mode)
    if engine.model.config._attn_implementation == "eager":  # eager adds the mask: additive float only
        mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    pos = ml.position_ids(layout, mode) if positions is None else positions
    with torch.no_grad():
        return engine.model(input_ids=torch.tensor([layout.token_ids]), attention_mask=mask[None, None],
                            position_ids=pos[None]).logits[0]


def sampled_indices(run: Run) -> list[int]:
    df = run.tokens
    return df.filter(~df["forced"])["logical_index"].to_list()


def assert_exact(engine, run: Run):
    """Sampled tokens are the teacher-forced argmax; positions and slots match the layout."""
    layout, ids = run.layout, run.layout.token_ids
    logits = teacher_forced(engine, layout, run.mode)
    idx = sampled_indices(run)
    assert idx, "the run sampled nothing"
    bad = [i for i in idx if int(logits[i - 1].argmax()) != ids[i]]
    assert not bad, f"{len(bad)} of {len(idx)} sampled tokens differ from the teacher-forced argmax, first at {bad[0]}"
    df = run.tokens
    assert df["logical_index"].to_list() == list(range(layout.T))
    assert df["position"].to_list() == ml.position_ids(layout, run.mode).tolist()
    assert sorted(df["cache_index"].to_list()) == list(range(layout.T))
    assert run.cache_len == layout.T  # one cache slot per token, no prefix copies
    return logits


# ----- exactness ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family,attn", [("qwen2", "sdpa"), ("llama", "sdpa"), ("qwen2", "eager")])
def test_greedy_run_equals_teacher_forced_forward(engines, plan, family, attn, mode):
    engine = engines(family, attn)
    run = engine.run(Q, mode=mode, plan=plan, temperature=0, **KW)
    assert run.mode == mode and run.plan == plan
    assert_exact(engine, run)
    # the trace reads back; the conclusion sees every step's </Step>
    trace = ml.parse_trace(run.text)
    assert trace.plan == plan and trace.step_texts == run.steps and trace.conclusion == run.conclusion
    mask = ml.attention_mask(run.layout, mode)
    closes = [run.layout.close_index(s) for s in plan.ids]
    if mode == "request":  # the conclusion's request repeats every block, </Step> included
        closes = [z - 1 - run.layout.separator_lens[r] for r, _, z in run.layout.repeated_spans("conclusion")]
    own = run.layout.own_start("conclusion")
    assert mask[own:run.layout.T][:, closes].all()
    assert [run.layout.token_ids[i] for i in closes] == [engine.tags["</Step>"]] * len(plan)
    assert run.layout.token_ids[run.layout.prefix_len - 2] == engine.tags["<Execution>"]


@pytest.mark.parametrize("mode", ["dag", "layered"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_decoded_logits_match_teacher_forced_logits(engines, plan, mode, attn):
    """Stronger than argmax: every sampled token's logits row, as the engine computed it,
    equals the teacher-forced row; and the check can fail (another mode's mask differs)."""
    engine = engines("qwen2", attn)
    with recording(engine.model) as calls:
        run = engine.run(Q, mode=mode, plan=plan, temperature=0, **KW)
    ref = teacher_forced(engine, run.layout, mode)
    df = run.tokens
    first_slot = {}
    for k, c in zip(df["cache_index"].to_list(), df["forward_call"].to_list()):
        first_slot[c] = min(k, first_slot.get(c, k))
    worst = 0.0
    for i in sampled_indices(run):
        prev = df.row(i - 1, named=True)  # the token whose logits chose token i
        row = calls[prev["forward_call"]][1][prev["cache_index"] - first_slot[prev["forward_call"]]]
        worst = max(worst, float((row - ref[i - 1]).abs().max()))
    assert worst < 1e-4
    other = teacher_forced(engine, run.layout, "sequential")
    steps = [i for i in sampled_indices(run) if df["branch"][i] in plan.ids]
    assert max(float((other[i - 1] - ref[i - 1]).abs().max()) for i in steps) > 1e-3


# ----- schedulers -----------------------------------------------------------------------------
def _spans(run):
    """step id -> (forward call of its first token, of its last token)."""
    df = run.tokens
    return {s: (min(c), max(c)) for s in run.plan.ids
            for c in [df.filter(df["branch"] == s)["forward_call"].to_list()]}


def test_schedulers_follow_their_rule(engines):
    engine = engines()
    plan = ml.Plan([ml.Step("1", "a -> b"),
                    ml.Step("2", "a much longer description of a finding -> and of what it implies clinically"),
                    ml.Step("3", "b -> c", deps=["1"])])
    runs = {m: engine.run(Q, mode=m, plan=plan, temperature=0, **KW) for m in MODES}
    dag, lay, spec, seq, req = (_spans(runs[m]) for m in MODES)
    assert dag["1"][0] == dag["2"][0] and dag["3"][0] == dag["1"][1] + 1  # 3 starts as soon as 1 is done
    assert lay["3"][0] == max(lay["1"][1], lay["2"][1]) + 1               # layered waits for the chunk
    assert spec["1"][0] == spec["2"][0] == spec["3"][0]                   # all at once
    assert seq["1"][1] < seq["2"][0] and seq["2"][1] < seq["3"][0]        # one after another
    assert req["1"][0] == req["2"][0] and req["3"][0] == req["1"][1] + 1  # request: as dag
    seq = runs["sequential"].tokens
    per_call = seq.group_by("forward_call").agg(pl.col("branch").n_unique(), (~pl.col("forced")).sum())
    assert per_call["branch"].max() == 1 and per_call["forced"].max() <= 1  # one branch, one sampled token per call
    for m, run in runs.items():
        assert_exact(engine, run)
        starts = [e for e in run.events if isinstance(e, StepStart)]
        assert [e.branch for e in starts] == ["1", "2", "3"]
    assert runs["dag"].timings["steps"] > 0 and set(runs["dag"].timings) == {"prefill", "plan", "steps",
                                                                              "conclusion", "total"}


def test_mode_defaults_to_the_models_medverse_mode(tokenizer, plan):
    engine = Engine(tiny_model("qwen2", len(tokenizer)), tokenizer)
    assert engine.run(Q, plan=plan, temperature=0, **KW).mode == "dag"
    engine.model.config.medverse_mode = "layered"
    assert engine.run(Q, plan=plan, temperature=0, **KW).mode == "layered"
    engine.model.config.medverse_mode = "medverse-sft"
    with pytest.raises(ValueError, match="layered"):
        engine.run(Q, plan=plan)


def test_medverse_sft_is_refused_with_the_reason(engines, plan):
    with pytest.raises(ValueError) as err:
        engines().run(Q, mode="medverse-sft", plan=plan)
    msg = str(err.value)
    assert "sibling" in msg and "mode='layered'" in msg


# ----- a plan the model writes ------------------------------------------------------------
def test_invalid_model_plan_falls_back_to_sequential(engines):
    engine = engines("llama")
    run = engine.run(Q, mode="dag", temperature=0, max_plan_tokens=12, **KW)
    errors = [e for e in run.events if isinstance(e, PlanRejected)]
    assert errors == [run.plan_error] and isinstance(run.plan_error.error, ml.PlanError)
    assert run.plan_error.requested_mode == "dag" and run.plan_error.fallback == "sequential"
    assert run.mode == "sequential" and run.requested_mode == "dag"
    assert run.plan_error.to_dict()["kind"] == "plan-error" and "problem" in run.plan_error.to_dict()["error"]
    assert run.plan.is_valid and len(run.plan) >= 1
    prefix = run.tokens.filter(run.tokens["branch"] == "prefix")
    assert (~prefix["forced"]).sum() >= 1  # Phase I sampled the plan
    assert_exact(engine, run)
    assert run.timings["plan"] > 0


@pytest.fixture(scope="module")
def memorised(tokenizer, example_text):
    """A tiny Qwen2 trained (plain causal, ~1 s) to recite the example trace after the prompt."""
    from medverse_lab.prompt import build_prompt

    engine = Engine(tiny_model("qwen2", len(tokenizer), seed=1), tokenizer)
    text = build_prompt(tokenizer, Q) + example_text[len("<Think>\n"):]
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    opt = torch.optim.AdamW(engine.model.parameters(), lr=1e-2)
    engine.model.train()
    for _ in range(400):
        loss = engine.model(input_ids=ids, labels=ids).loss
        if loss.item() < 0.02:
            break
        loss.backward()
        opt.step()
        opt.zero_grad()
    engine.model.eval()
    assert loss.item() < 0.02, f"the tiny model did not learn the trace (loss {loss.item():.3f})"
    return engine


def test_model_written_valid_plan_runs_in_parallel(memorised, example_text):
    trace = ml.parse_trace(example_text)
    run = memorised.run(Q, temperature=0, max_step_tokens=40, max_conclusion_tokens=8)
    assert run.plan_error is None
    assert run.mode == "dag" and run.plan == trace.plan
    assert run.tokens.filter(run.tokens["branch"] == "prefix")["forced"].sum() < run.layout.prefix_len
    assert_exact(memorised, run)
    # a root step under dag sees the prefix from the prefix end, as in (causal) training
    assert run.steps["1"] == trace.step_texts["1"]
    assert run.timings["plan"] > 0 and ml.parse_trace(run.text).plan == trace.plan


# ----- streaming ------------------------------------------------------------------------------
def test_stream_and_on_token_report_every_decoded_token(engines, plan):
    engine = engines()
    seen: list[TokenEvent] = []
    run = engine.run(Q, mode="dag", plan=plan, seed=5, on_token=seen.append, **KW)
    stream = engine.stream(Q, mode="dag", plan=plan, seed=5, **KW)
    assert stream.run is None
    streamed = list(stream)
    assert isinstance(stream.run, Run) and stream.run.layout.token_ids == run.layout.token_ids
    key = lambda e: (e.branch, e.text, e.position, e.token_id, e.cache_index, e.forced, e.forward_call)
    assert [key(e) for e in streamed if isinstance(e, TokenEvent)] == [key(e) for e in seen]
    df = run.tokens.sort("cache_index")
    first = run.layout.prefix_len  # the given plan was prefilled: events start at the first step token
    assert len(seen) == run.layout.T - first
    assert [e.cache_index for e in seen] == df["cache_index"].to_list()[first:]
    assert [e.branch for e in seen] == df["branch"].to_list()[first:]
    assert [e.position for e in seen] == df["position"].to_list()[first:]
    times = [e.time_s for e in seen]
    assert times == sorted(times) and times[-1] <= run.timings["total"]
    # branches grow side by side: some forward call reports tokens of several steps
    assert max(sum(1 for e in seen if e.forward_call == c) for c in {e.forward_call for e in seen}) >= 3


def test_stream_yields_the_lifecycle_events_in_order_with_the_tokens(engines, plan):
    from medverse_lab.engine import PhaseStart, StepEnd, StepStart

    stream = engines().stream(Q, mode="dag", plan=plan, seed=5, **KW)
    items = list(stream)
    run = stream.run
    lifecycle = [e for e in items if not isinstance(e, TokenEvent)]
    assert lifecycle == run.events  # every event, once, in the order it happened
    assert [e.phase for e in lifecycle if isinstance(e, PhaseStart)] == ["steps", "conclusion"]
    at = {id(e): i for i, e in enumerate(items)}
    for sid in plan.ids:
        mine = [i for i, e in enumerate(items) if isinstance(e, TokenEvent) and e.branch == sid]
        start = next(e for e in lifecycle if isinstance(e, StepStart) and e.branch == sid)
        end = next(e for e in lifecycle if isinstance(e, StepEnd) and e.branch == sid)
        assert at[id(start)] < mine[0] and mine[-1] < at[id(end)]  # a step's tokens lie between its events
        assert items[mine[-1] - len(engines().ids.separator)].text == "</Step>"
        for parent in plan[sid].deps:  # dag: a step starts only after its parents ended
            parent_end = next(e for e in lifecycle if isinstance(e, StepEnd) and e.branch == parent)
            assert at[id(parent_end)] < at[id(start)]
    conclusion = next(i for i, e in enumerate(items) if isinstance(e, TokenEvent) and e.branch == "conclusion")
    assert max(at[id(e)] for e in lifecycle if isinstance(e, StepEnd)) < conclusion


def test_stream_checks_arguments_at_the_call(engines):
    with pytest.raises(ValueError, match="unknown mode"):
        engines().stream(Q, mode="bogus")


# ----- reproducible sampling ------------------------------------------------------------------
def test_runs_sample_as_the_model_s_generation_config_says_unless_told(tokenizer, plan):
    model = tiny_model("qwen2", len(tokenizer))
    greedy = Engine(model, tokenizer)  # a config that does not sample: greedy
    assert greedy.sampling == {"temperature": 0.0, "top_p": 1.0}
    run = greedy.run(Q, plan=plan, **KW)
    assert run.settings["temperature"] == 0.0 and run.layout.token_ids == greedy.run(Q, plan=plan, temperature=0,
                                                                                       **KW).layout.token_ids
    model.generation_config.do_sample, model.generation_config.temperature = True, 0.9
    model.generation_config.top_p = 0.8
    sampling = Engine(model, tokenizer)
    assert sampling.sampling == {"temperature": 0.9, "top_p": 0.8}
    settings = sampling.run(Q, plan=plan, **KW).settings
    assert (settings["temperature"], settings["top_p"]) == (0.9, 0.8)
    assert sampling.run(Q, plan=plan, temperature=0, **KW).settings["temperature"] == 0.0  # told: as told



def test_same_seed_same_run_different_seeds_differ(engines, plan):
    engine = engines()
    kw = dict(mode="dag", plan=plan, temperature=1.0, top_p=0.95, max_step_tokens=8, max_conclusion_tokens=8)
    a, b, c = (engine.run(Q, seed=s, **kw) for s in (1, 1, 2))
    assert a.layout.token_ids == b.layout.token_ids and a.text == b.text
    assert a.layout.token_ids != c.layout.token_ids


# ----- rerun ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,step,dropped", [("dag", "1", {"1", "4", "5"}), ("layered", "2", {"2", "4", "5"}),
                                               ("speculative", "3", {"3"}), ("sequential", "4", {"4", "5"})])
def test_rerun_redecodes_only_the_step_and_what_sees_it(engines, plan, mode, step, dropped):
    engine = engines()
    run = engine.run(Q, mode=mode, plan=plan, seed=0, temperature=0, **KW)
    before = (run.text, run.cache_len)
    with recording(engine.model) as calls:
        new = engine.rerun(run, step, text="Forced body for this step.\n")
    assert new.steps[step] == "Forced body for this step.\n"
    redo = dropped | {"conclusion"}
    fed = sum(ids.shape[1] for ids, _ in calls)
    assert fed == sum(len(new.layout.segment(b)) for b in redo)  # only the re-decoded tokens
    for s in plan.ids:
        if s not in dropped:
            a, b = run.layout.segment(s), new.layout.segment(s)
            assert run.layout.token_ids[a.start:a.stop] == new.layout.token_ids[b.start:b.stop]
    assert new.layout.token_ids[:new.layout.prefix_len] == run.layout.token_ids[:run.layout.prefix_len]
    assert_exact(engine, new)  # includes: one slot per token
    assert list(new.rerun_event.dropped) == [s for s in plan.ids if s in dropped] and run.rerun_event is None
    assert (run.text, run.cache_len) == before  # the original run is untouched
    ml.parse_trace(new.text)


def test_rerun_with_seed_and_description(engines, plan):
    engine = engines()
    run = engine.run(Q, mode="dag", plan=plan, seed=0, temperature=1.0, max_step_tokens=8, max_conclusion_tokens=6)
    again = engine.rerun(run, "2", seed=0)
    other = engine.rerun(run, "2", seed=123)
    assert again.steps["1"] == run.steps["1"] and other.steps["3"] == run.steps["3"]
    assert again.layout.token_ids == engine.rerun(run, "2", seed=0).layout.token_ids
    assert other.layout.token_ids != again.layout.token_ids
    named = engine.rerun(run, "2", description="troponin -> necrosis", seed=1)
    assert named.plan["2"].description == "troponin -> necrosis" and named.plan["4"] == run.plan["4"]
    assert "<Step> Transient Step 2: troponin -> necrosis\n" in named.text
    assert "Transient Step 2: troponin -> necrosis; Dependency: []" in named.text  # the plan changed too
    assert ml.parse_trace(named.text).plan == named.plan
    assert list(named.rerun_event.dropped) == plan.ids
    assert named.cache_len == named.layout.T
    chained = engine.rerun(named, "4")
    assert chained.generation == 2 and chained.steps["2"] == named.steps["2"]
    run.release()
    assert run.cache_bytes == 0 and run.text
    with pytest.raises(ValueError, match="released"):
        engine.rerun(run, "2")
    with pytest.raises(KeyError, match="no step '9'"):
        engine.rerun(named, "9")


# ----- the run object ------------------------------------------------------------------------
def test_run_object(engines, plan):
    engine = engines()
    run = engine.run(Q, mode="layered", plan=plan, temperature=0, **KW)
    assert list(run.tokens.columns) == ["branch", "logical_index", "cache_index", "position", "token_id", "text",
                                        "forced", "forward_call", "time_s", "repeat_of"]
    assert set(run.tokens["branch"].unique()) == {"prefix", "conclusion", *plan.ids}
    assert run.text.startswith(run.prompt) and run.prompt.endswith("<Think>\n")
    assert run.text.endswith("</Conclusion>\n</Think>")
    assert engine.decode(run.layout.token_ids[:run.layout.prefix_len]).endswith("</Plan>\n<Execution>\n")
    assert set(run.steps) == set(plan.ids)
    assert run.cache_bytes > 0 and "Run(mode='layered'" in repr(run)
    closes = run.forced_closes
    assert {e.branch for e in closes} >= set(plan.ids) and all(isinstance(e, ForcedClose) for e in closes)  # random weights: every step hit max_step_tokens
    sampled = run.tokens.filter(~run.tokens["forced"]).group_by("branch").len()
    assert dict(sampled.iter_rows())["1"] == KW["max_step_tokens"]  # then </Step> was forced
    assert parse_answer("Inferior STEMI ... primary PCI. Answer: C") == "C"
    assert parse_answer("the answer is (B)") == "B" and parse_answer("no letter here") is None
    assert parse_answer("the answer is a combination of both") is None  # a capital letter only


# ----- errors before any decoding ------------------------------------------------------------
def test_errors_come_before_any_decoding(engines, plan):
    engine = engines()
    bad_plan = ml.Plan([ml.Step("1", "a", deps=["2"]), ml.Step("2", "b")])
    with recording(engine.model) as calls:
        with pytest.raises(ValueError, match="unknown mode 'fast'.*dag, layered, speculative, sequential"):
            engine.run(Q, mode="fast")
        with pytest.raises(ml.PlanError, match="renumbered"):
            engine.run(Q, plan=bad_plan)
        with pytest.raises(ml.PlanError):
            engine.run(Q, plan="this is not an outline")
        for name in ("max_plan_tokens", "max_step_tokens", "max_conclusion_tokens"):
            with pytest.raises(ValueError, match=f"{name} = 0: must be an integer >= 1"):
                engine.run(Q, **{name: 0})
        for q in ("", "   \n"):
            with pytest.raises(ValueError, match="question is empty"):
                engine.run(q)
        with pytest.raises(ValueError, match="temperature"):
            engine.run(Q, temperature=-1)
        with pytest.raises(ValueError, match="top_p"):
            engine.run(Q, top_p=0)
    assert calls == []
    assert engine.run(Q, plan=plan.to_outline(), temperature=0, **KW).plan == plan  # outline text works too


# ----- loading --------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_load_a_checkpoint_folder(tmp_path, tokenizer, plan, family):
    model = tiny_model(family, len(tokenizer))
    model.config.medverse_mode = "layered"
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert list(tmp_path.glob("*.safetensors"))
    engine = Engine.load(tmp_path)
    assert engine.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert engine.model.config._attn_implementation == "sdpa" and engine.default_mode == "layered"
    if engine.device.type == "cpu":
        assert engine.dtype == torch.float32
    run = engine.run(Q, plan=plan, temperature=0, **KW)
    assert run.mode == "layered"
    assert_exact(engine, run)
    eager = Engine.load(tmp_path, device="cpu", dtype="float32", attn_implementation="eager")
    assert eager.run(Q, plan=plan, temperature=0, **KW).layout.token_ids == run.layout.token_ids


def test_load_refusals(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="flash_attention_2.*attn_implementation='sdpa'"):
        Engine.load(tmp_path, attn_implementation="flash_attention_2")
    model = tiny_model("qwen2", len(tokenizer))
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="cannot take the 4-D attention mask"):
        Engine(model, tokenizer)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        Engine.load(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="config.json"):
        Engine.load(tmp_path)
    tiny_model("qwen2", len(tokenizer)).save_pretrained(tmp_path, safe_serialization=True)
    for f in tmp_path.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match="safetensors"):
        Engine.load(tmp_path)
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True, sliding_window=8,
                      max_window_layers=0)
    with pytest.raises(ValueError, match="sliding"):
        Engine(Qwen2ForCausalLM(cfg), tokenizer)


def test_embedded_model_or_a_clear_error():
    path = default_model_path()
    if path is None:
        with pytest.raises(FileNotFoundError, match="not shipped yet.*Engine.load\\('/path/to/checkpoint'\\)"):
            Engine.load()
    else:
        assert (path / "config.json").is_file()
        assert isinstance(Engine.load(), Engine)


def test_tokenizer_without_tags(example_text):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([example_text] * 4, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    plain = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    n0 = len(plain)
    model = tiny_model("llama", len(plain))
    with pytest.raises(ValueError, match="no single token for <Think>.*add_tags=True"):
        Engine(model, plain)
    with pytest.warns(UserWarning, match="will not write them"):
        engine = Engine(model, plain, add_tags=True)
    assert len(plain) == n0 + 12 and model.get_input_embeddings().weight.shape[0] >= len(plain)
    run = engine.run(Q, plan="Transient Step 1: a -> b; Dependency: []", temperature=0, **KW)
    assert_exact(engine, run)


def test_stray_special_tokens_close_a_branch(tokenizer, plan):
    """A model whose every logit is 0 picks token 0 (<pad>): inside a step or the
    conclusion that is a stray special token, so the engine forces the close tag."""
    model = tiny_model("llama", len(tokenizer))
    with torch.no_grad():
        model.lm_head.weight.zero_()
    engine = Engine(model, tokenizer)
    run = engine.run(Q, plan=plan, temperature=0, **KW)
    closes = {e.branch: e.reason for e in run.forced_closes}
    assert closes == {**{s: "stray-token" for s in plan.ids}, "conclusion": "stray-token"}
    assert run.steps == {s: "" for s in plan.ids} and run.conclusion == ""
    assert ml.parse_trace(run.text).plan == plan and run.cache_len == run.layout.T
    written = engine.run(Q, temperature=0, **KW)  # Phase I: </Plan> forced at once, empty plan
    assert written.mode == "sequential" and written.plan_error is not None


def test_sampling_rules():
    from medverse_lab.engine.sampling import sample

    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9], [5.0, 0.0, 0.0, 0.0]])
    assert sample(logits, 0, 0.95, None).tolist() == [1, 0]
    g = torch.Generator().manual_seed(0)
    assert all(sample(logits, 1.0, 1e-6, g).tolist() == [1, 0] for _ in range(20))  # top-p keeps the top token
    draws = {tuple(sample(logits, 5.0, 1.0, g).tolist()) for _ in range(200)}
    assert len(draws) > 4  # a high temperature spreads the draws


def test_chat_template_prompt(tokenizer, plan):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    engine = Engine(tiny_model("qwen2", len(tok)), tok, system_prompt="You are a careful physician.")
    run = engine.run(Q, plan=plan, temperature=0, **KW)
    assert run.prompt == ("<|im_start|>system\nYou are a careful physician.<|im_end|>\n<|im_start|>user\n"
                          f"Question:\n{Q}<|im_end|>\n<|im_start|>assistant\n<Think>\n")
    assert run.text.startswith(run.prompt)
    assert_exact(engine, run)


@pytest.mark.parametrize("outline, kept", [
    ("Transient Step 1: a; Dependency: []\nTransient Step 3: c; Dependency: [1]\nTransient Step 2: b; Dependency: [1]",
     ["1", "3"]),                                                       # out of order
    ("Transient Step 1: a; Dependency: [2]\nTransient Step 2: b; Dependency: [1]", ["1", "2"]),  # a cycle
    ("Transient Step 1: a; Dependency: [7]", ["1"]),                   # unknown dependency
    ("no outline at all", ["1"]),
])
def test_a_broken_plan_is_salvaged_into_one_a_sequential_run_can_execute(outline, kept):
    from medverse_lab.engine.decode import salvage_plan

    with pytest.raises(ml.PlanError):
        ml.Plan.from_outline(outline).validate()
    assert salvage_plan(outline).ids == kept
