"""The vLLM backends against a real vLLM: ``Engine.load(path, backend="vllm")`` in process
and ``Engine.remote(url)`` over a real ``vllm serve`` on 127.0.0.1 decode the same tokens
as the local engine, greedy, in modes ``request`` and ``sequential``, on the teaching model
and on a random Qwen2 whose plans fail validation; the modes no stock engine decodes are
refused, naming ``request``.

vLLM comes with the ``[vllm]`` extra (the README's install line); without it these tests
skip with that reason, or fail where ``MEDVERSE_REQUIRE_VLLM=1`` (``.ci/run`` sets it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

try:
    import vllm as _vllm  # noqa: F401
except ImportError as err:
    if os.environ.get("MEDVERSE_REQUIRE_VLLM") == "1":
        raise RuntimeError(f"MEDVERSE_REQUIRE_VLLM=1 but vLLM does not import: {err}") from err
    pytest.skip(f"vLLM is not installed (pip install -e '.[vllm]'): {err}", allow_module_level=True)
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import httpx  # noqa: E402

import medverse_lab as ml  # noqa: E402
from medverse_lab.data.curate import make_questions  # noqa: E402
from medverse_lab.engine import Engine, PlanRejected, StepEnd, TokenEvent, default_model_path  # noqa: E402
from medverse_lab.engine.vllm_backend import vllm_serve_command  # noqa: E402
from medverse_lab.data.questions import format_question  # noqa: E402

from conftest import free_port, stop_process, wait_for_http  # noqa: E402

pytestmark = pytest.mark.slow

QUESTIONS = [format_question(q) for q in make_questions(16, seed=7, split="test")]
GREEDY = dict(temperature=0)


def same_run(a, b):
    """Token for token, and the same lifecycle events (times aside; steps decoding side by
    side may end in another order when a server answers a whole request at once)."""
    assert b.layout.token_ids == a.layout.token_ids
    assert b.mode == a.mode and b.plan == a.plan and b.answer == a.answer
    strip = lambda run: sorted(json.dumps({k: v for k, v in e.to_dict().items() if k not in ("time_s", "forward_call")},
                                          sort_keys=True) for e in run.events)
    assert strip(b) == strip(a)


@pytest.fixture(scope="module", autouse=True)
def torch_threads():
    """vLLM in process sets torch to one thread (its serving default); the tests after this
    module get the count back."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# ----- the teaching model ------------------------------------------------------------------
@pytest.fixture(scope="module")
def teaching():
    path = default_model_path("request")
    if path is None:
        pytest.skip("the request teaching model is not shipped")
    return Engine.load(path), Engine.load(path, backend="vllm")


@pytest.mark.parametrize("mode", ["request", "sequential"])
def test_vllm_decodes_the_teaching_model_token_for_token(teaching, mode):
    local, vllm = teaching
    ours = local.run_many(QUESTIONS, mode=mode, batch_size=8, **GREEDY)
    theirs = vllm.run_many(QUESTIONS, mode=mode, batch_size=8, **GREEDY)
    for a, b in zip(ours, theirs):
        same_run(a, b)
        assert b.backend == "vllm" and b.token_exact and b.cache_bytes == 0
    assert sum(len(r.plan) for r in theirs) >= 2 * len(QUESTIONS)  # real multi-step plans, not fallbacks
    assert sum(r.answer is not None for r in theirs) >= 12


def test_vllm_streams_the_same_lifecycle_and_reruns(teaching):
    local, vllm = teaching
    stream = vllm.stream(QUESTIONS[0], **GREEDY)  # the model's mode: request
    items = list(stream)
    run = stream.run
    assert run.mode == "request"
    assert [e for e in items if not isinstance(e, TokenEvent)] == run.events
    tokens = [e for e in items if isinstance(e, TokenEvent)]
    assert tokens and all(e.cache_index is None for e in tokens)  # vLLM's cache is its own: absent, not faked
    assert run.tokens["cache_index"].null_count() == run.layout.T
    assert any(isinstance(e, StepEnd) for e in items)
    step = run.plan.ids[0]
    ours = local.rerun(local.run(QUESTIONS[0], **GREEDY), step, text="A forced finding.\n")
    theirs = vllm.rerun(run, step, text="A forced finding.\n")
    same_run(ours, theirs)
    assert theirs.rerun_event.dropped == ours.rerun_event.dropped


@pytest.mark.parametrize("mode", ["dag", "layered", "speculative"])
def test_modes_no_stock_engine_decodes_are_refused_naming_request(teaching, mode):
    with pytest.raises(ValueError, match="mode='request'"):
        teaching[1].run(QUESTIONS[0], mode=mode)


def test_load_refuses_an_unknown_backend():
    with pytest.raises(ValueError, match="'local' or 'vllm'"):
        Engine.load(backend="sglang")


# ----- a random Qwen2: the plan fails validation, the same fallback --------------------------
@pytest.fixture(scope="module")
def random_qwen2(tmp_path_factory):
    """A random Qwen2 from config with the teaching tokenizer, saved as a checkpoint folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    folder = tmp_path_factory.mktemp("random-qwen2")
    tok = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    # a wide init spreads the logits, so greedy choices are not near-ties that float order could flip
    # head_dim 64: vLLM's CPU attention takes 32, 64, 80, 96, 112, 128... not 16
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                      initializer_range=0.5, tie_word_embeddings=False, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_vllm_random_qwen2_same_tokens_and_same_plan_fallback(random_qwen2):
    local = Engine.load(random_qwen2)
    vllm = Engine.load(random_qwen2, backend="vllm")
    kw = dict(mode="request", max_plan_tokens=24, max_step_tokens=12, max_conclusion_tokens=12, **GREEDY)
    ours = local.run_many(QUESTIONS, batch_size=8, **kw)
    theirs = vllm.run_many(QUESTIONS, batch_size=8, **kw)
    for a, b in zip(ours, theirs):
        same_run(a, b)
    rejected = [r for r in theirs if isinstance(r.plan_error, PlanRejected)]
    assert rejected and all(r.mode == "sequential" for r in rejected)  # the same fallback, the same event
    assert any(r.forced_closes for r in theirs)


# ----- remote: a real `vllm serve` on 127.0.0.1 ------------------------------------------------
@pytest.fixture(scope="module")
def vllm_server():
    path = default_model_path("request")
    if path is None:
        pytest.skip("the request teaching model is not shipped")
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.Popen(vllm_serve_command(path, port), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_for_http(proc, f"{url}/v1/models", 600)
    yield url
    stop_process(proc)


def test_remote_vllm_serve_gives_the_same_tokens(teaching, vllm_server):
    local = teaching[0]
    remote = Engine.remote(vllm_server)
    assert remote.default_mode == "request"
    for mode in ("request", "sequential"):
        ours = local.run_many(QUESTIONS[:6], mode=mode, **GREEDY)
        theirs = remote.run_many(QUESTIONS[:6], mode=mode, **GREEDY)
        for a, b in zip(ours, theirs):
            same_run(a, b)
            assert b.backend == "remote" and b.token_exact
    with pytest.raises(ValueError, match="mode='request'"):
        remote.run(QUESTIONS[0], mode="dag")
    table, summary = ml.evaluate(remote, make_questions(4, seed=7, split="test"), modes=("request",), progress=False)
    assert table["error"].null_count() == 4 and summary["accuracy"][0] is not None


# ----- the commands ----------------------------------------------------------------------------
def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "medverse_lab.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TQDM_DISABLE": "1"})


def test_run_command_on_vllm_prints_the_same_answer(teaching):
    local = teaching[0]
    path = str(default_model_path("request"))
    out = cli("run", QUESTIONS[1], "--model", path, "--backend", "vllm", "--no-compare")
    assert out.returncode == 0, out.stderr[-2000:]
    run = local.run(QUESTIONS[1], **GREEDY)
    assert f"Answer: {run.answer or '(none)'}" in out.stdout
    assert out.stdout.count(" done: ") == len(run.plan)  # each step printed as it ended


def test_eval_command_against_a_remote_vllm_serve(vllm_server, tmp_path):
    file = tmp_path / "questions.jsonl"
    qs = make_questions(4, seed=7, split="test")
    ml.records.write_jsonl([{"id": q.id, "question": q.question, "options": q.options, "answer_idx": q.answer}
                            for q in qs], file)
    out = cli("eval", str(file), "--backend", "remote", "--url", vllm_server, "--out", str(tmp_path / "t.csv"))
    assert out.returncode == 0, out.stderr[-2000:]
    table = __import__("polars").read_csv(tmp_path / "t.csv")
    assert sorted(set(table["mode"])) == ["request", "sequential"] and table["error"].null_count() == 8
    bad = cli("eval", str(file), "--backend", "remote", "--url", vllm_server, "--modes", "dag")
    assert bad.returncode == 2 and "mode='request'" in bad.stderr
    run = cli("run", QUESTIONS[0], "--backend", "remote", "--url", vllm_server, "--no-compare")
    assert run.returncode == 0 and "Answer: " in run.stdout and " done: " in run.stdout, run.stderr[-2000:]


def test_serve_command_on_vllm_keeps_the_api_and_its_checks(teaching):
    from openai import OpenAI

    local = teaching[0]
    port = free_port()
    path = str(default_model_path("request"))
    proc = subprocess.Popen([sys.executable, "-m", "medverse_lab.cli", "serve", "--model", path,
                             "--backend", "vllm", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(proc, f"{url}/health", 600)
        client = OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0, timeout=300)
        name = client.models.list().data[0].id  # an unknown model is a 404, as vLLM answers
        reply = client.chat.completions.create(model=name, temperature=0,
                                               messages=[{"role": "user", "content": QUESTIONS[2]}])
        run = local.run(QUESTIONS[2], **GREEDY)
        turn = "<Think>\n" + local.decode(run.layout.base.token_ids[len(local.encode(run.prompt)):])
        assert reply.choices[0].message.content == turn
        assert reply.model_extra["medverse"]["mode"] == "request"
        stream = client.chat.completions.create(model=name, temperature=0, stream=True,
                                                messages=[{"role": "user", "content": QUESTIONS[2]}])
        assert "".join(c.choices[0].delta.content or "" for c in stream) == reply.choices[0].message.content
        refused = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
            "model": name, "mode": "dag", "messages": [{"role": "user", "content": QUESTIONS[2]}]})
        assert refused.status_code == 400 and "mode='request'" in refused.json()["error"]["message"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_widgets_say_what_a_vllm_run_cannot_show(teaching):
    vllm = teaching[1]
    run = vllm.run(QUESTIONS[3], **GREEDY)
    viewer = ml.RunViewer(vllm, run)
    assert viewer.modes == ["request", "sequential"] and viewer.mode == "request"
    assert viewer.summary["backend"] == "vllm" and "no cache slots" in viewer.summary["backend_note"]
    inspector = ml.MaskInspector(run)
    assert inspector.mode == "request" and "vllm backend" in inspector.notice
    local_run = teaching[0].run(QUESTIONS[3], **GREEDY)
    assert ml.MaskInspector(local_run).notice == "" and ml.RunViewer(teaching[0], local_run).summary["backend_note"] is None
