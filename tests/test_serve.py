"""`medverse-lab serve` over real HTTP: the server runs as its own process on a free port
(the embedded teaching model), clients are the `openai` package and plain httpx."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import medverse_lab as ml
from medverse_lab.questions import format_question, load_questions

from conftest import free_port, wait_for_http

pytestmark = pytest.mark.slow
CAP = 200  # max tokens per phase (the same caps for the run decoded alone)
QUESTION = (Path(ml.__file__).parent / "examples" / "question.txt").read_text(encoding="utf-8").strip()


@pytest.fixture(scope="module")
def server():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "medverse_lab.cli", "serve", "--port", str(port), "--max-batch", "8"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    url = f"http://127.0.0.1:{port}"
    wait_for_http(proc, f"{url}/health", 120)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def engine():
    return ml.Engine.load()


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server}/v1", api_key="not-needed", max_retries=0, timeout=120)


def alone(engine, question, **kw):
    return engine.run(question, temperature=0, max_plan_tokens=CAP, max_step_tokens=CAP, max_conclusion_tokens=CAP,
                      **kw)


def completion_of(engine, run) -> str:
    return engine.decode(run.layout.base.token_ids[len(engine.encode(run.prompt)):])


def chat_turn_of(engine, run) -> str:
    """A chat reply: the whole assistant turn, ``<Think>`` (the prompt's last line) to ``</Think>``."""
    return "<Think>\n" + completion_of(engine, run)


# ----- the OpenAI shapes -----------------------------------------------------------------------
def test_chat_completion_with_the_openai_client(client, engine):
    reply = client.chat.completions.create(model="medverse-teaching-model", temperature=0, max_tokens=CAP,
                                           messages=[{"role": "user", "content": QUESTION}])
    run = alone(engine, QUESTION)
    text = reply.choices[0].message.content
    assert text == chat_turn_of(engine, run)
    assert text.startswith("<Think>\n") and text.rstrip().endswith("</Think>")  # balanced
    trace = ml.parse_trace(text)  # the plan, steps and answer, as MedVerse text
    mv = reply.model_extra["medverse"]
    assert mv["steps"] == run.steps == trace.step_texts and mv["answer"] == run.answer
    assert mv["plan"] == [{"id": s.id, "description": s.description, "deps": list(s.deps)} for s in run.plan.steps]
    assert mv["mode"] == "dag" and set(mv["timings"]) == {"prefill", "plan", "steps", "conclusion", "total"}
    assert reply.usage.completion_tokens == run.layout.T - len(engine.encode(run.prompt))


def test_a_request_without_temperature_samples_as_the_model_says(client, engine):
    assert engine.sampling["temperature"] == 0.0  # the teaching model's generation config: greedy
    reply = client.chat.completions.create(model="m", max_tokens=CAP, messages=[{"role": "user", "content": QUESTION}])
    assert reply.choices[0].message.content == chat_turn_of(engine, alone(engine, QUESTION))


def test_chat_stream_sends_the_turn_in_order_and_branch_tokens_live(client, engine):
    stream = client.chat.completions.create(model="m", temperature=0, max_tokens=CAP, stream=True,
                                            messages=[{"role": "user", "content": QUESTION}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    run = alone(engine, QUESTION)
    assert text == chat_turn_of(engine, run)  # concatenated deltas are the whole turn, in plan order
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].model_extra["medverse"]["summary"]["steps"] == run.steps
    # while Phase II runs, one chunk carries tokens of several steps (decoded in one forward)
    widths = [len({t["branch"] for t in c.model_extra["medverse"]["tokens"]} - {"prefix", "conclusion"})
              for c in chunks]
    assert max(widths) >= 2


def test_text_completion_and_models(client, engine, server):
    reply = client.completions.create(model="m", prompt=QUESTION, temperature=0, max_tokens=CAP)
    assert reply.choices[0].text == completion_of(engine, alone(engine, QUESTION))
    assert [m.id for m in client.models.list().data] == ["medverse-teaching-model"]
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["mode"] == "dag"


@pytest.mark.parametrize("mode", ["sequential", "request"])
def test_a_plan_and_mode_in_the_body(client, engine, mode):
    plan = "Transient Step 1: fever -> infection; Dependency: []\nTransient Step 2: infection -> antibiotics; " \
           "Dependency: [1]"
    reply = client.chat.completions.create(model="m", temperature=0, max_tokens=CAP, stream=True,
                                           messages=[{"role": "user", "content": QUESTION}],
                                           extra_body={"mode": mode, "plan": plan})
    chunks = list(reply)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    run = alone(engine, QUESTION, mode=mode, plan=plan)
    # request: step 2's request repeats step 1's block; the stream sends each block once
    assert text == chat_turn_of(engine, run) and run.plan.ids == ["1", "2"]
    assert chunks[-1].model_extra["medverse"]["summary"]["mode"] == mode


# ----- SGLang's /generate, as the public MedVerse client calls it ------------------------------
def test_generate_in_the_public_clients_shape(server, engine):
    prompt = ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
              f"<|im_start|>user\nQuestion:\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n<Think>\n")
    body = {"text": prompt, "sampling_params": {"temperature": 0, "top_p": 0.95, "max_new_tokens": CAP,
                                                "skip_special_tokens": False, "stop": ["<|im_end|>"]}}
    r = httpx.post(f"{server}/generate", json=body, timeout=120)
    assert r.status_code == 200
    out = r.json()
    run = alone(engine, QUESTION)
    assert run.prompt == prompt and out["text"] == completion_of(engine, run)
    assert out["meta_info"]["finish_reason"]["type"] in ("stop", "length")
    assert out["meta_info"]["prompt_tokens"] == len(engine.encode(prompt))
    assert out["meta_info"]["medverse"]["answer"] == run.answer
    cut = httpx.post(f"{server}/generate", json={**body, "sampling_params": {**body["sampling_params"],
                                                                            "stop": ["</Plan>"]}}, timeout=120).json()
    assert cut["text"] == out["text"][:out["text"].index("</Plan>")]
    assert cut["meta_info"]["finish_reason"] == {"type": "stop", "matched": "</Plan>"}
    plain = httpx.post(f"{server}/generate", json={**body, "sampling_params": {
        **body["sampling_params"], "skip_special_tokens": True}}, timeout=120).json()["text"]
    assert "<Step>" not in plain and "<Plan>" not in plain


# ----- many clients at once --------------------------------------------------------------------
def test_32_concurrent_clients_each_get_their_own_answer(server, engine):
    records = ml.curate.synthesize(32, seed=3, split="test")
    questions = [format_question(q) for q in load_questions(records)]
    assert len(set(questions)) == 32

    def ask(q):
        r = httpx.post(f"{server}/v1/chat/completions", timeout=300, json={
            "model": "m", "temperature": 0, "max_tokens": CAP, "messages": [{"role": "user", "content": q}]})
        assert r.status_code == 200, r.text
        return r.json()

    before = httpx.get(f"{server}/health").json()
    t = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(ask, questions))
    wall = time.perf_counter() - t
    after = httpx.get(f"{server}/health").json()
    assert after["max_batch_seen"] == 8  # requests shared the batched decoder, eight at a time
    for q, reply in zip(questions, replies):
        run = alone(engine, q)
        assert reply["choices"][0]["message"]["content"] == chat_turn_of(engine, run), q[:60]
        assert reply["medverse"]["steps"] == run.steps and reply["medverse"]["answer"] == run.answer
    assert after["finished"] - before["finished"] == 32
    print(f"32 concurrent requests in {wall:.1f} s")


# ----- bad requests get a 4xx naming the field; the server keeps serving ---------------------
@pytest.mark.parametrize("path,body,status,param", [
    ("/v1/chat/completions", b"{not json", 400, "body"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "q"}], "mode": "fast"}, 400, "mode"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "q"}], "max_tokens": -5}, 400, "max_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "q"}], "max_tokens": 10**9}, 400,
     "max_tokens"),
    ("/v1/chat/completions", {"model": "m"}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "system", "content": "be brief"}]}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "q"}], "n": 3}, 400, "n"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "q"}], "plan": "no outline"}, 400, "plan"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "q"}], "temperature": -1}, 400,
     "temperature"),
    ("/v1/completions", {"model": "m"}, 400, "prompt"),
    ("/generate", {"sampling_params": {}}, 400, "text"),
    ("/generate", {"text": "q", "sampling_params": {"max_new_tokens": 0}}, 400, "sampling_params.max_new_tokens"),
    ("/generate", [1, 2], 400, "body"),
    ("/generate", {"text": "q" * (2 << 20)}, 413, "body"),
])
def test_bad_requests_are_refused_by_name(server, path, body, status, param):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(server + path, content=content, headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"] and "Traceback" not in r.text
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_openai_client_sees_a_bad_request_error(client):
    from openai import BadRequestError

    with pytest.raises(BadRequestError, match="unknown mode"):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}],
                                       extra_body={"mode": "fast"})


def test_a_client_that_disconnects_frees_its_branches(server):
    before = httpx.get(f"{server}/health").json()
    body = {"model": "m", "temperature": 1.0, "max_tokens": 4000, "stream": True,
            "messages": [{"role": "user", "content": QUESTION}]}
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")  # the stream has begun; now hang up
    deadline = time.time() + 30
    while time.time() < deadline:
        h = httpx.get(f"{server}/health").json()
        if h["running"] == 0 and h["cancelled"] > before["cancelled"]:
            break
        time.sleep(0.2)
    assert h["running"] == 0 and h["cancelled"] == before["cancelled"] + 1
    assert h["finished"] == before["finished"]  # it was dropped, not decoded to the end
    r = httpx.post(f"{server}/v1/chat/completions", timeout=60,
                   json={"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8, "temperature": 0})
    assert r.status_code == 200


def test_serve_binds_localhost_by_default():
    from medverse_lab.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.max_batch == 8
