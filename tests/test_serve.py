"""`medverse-lab serve` over real HTTP: the server runs as its own process on a free port
(the embedded teaching model), clients are the `openai` package and plain httpx. The happy
path and bad input here; fields clients use, access and faults in test_serve_*.py."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import medverse_lab as ml
from medverse_lab.data.questions import format_question, load_questions

from serve_util import (MODEL, PHASE_CAPS, QUESTION, alone, chat_turn_of, client,  # noqa: F401 - fixtures
                        completion_of, engine, reply_tokens, server)

pytestmark = pytest.mark.slow


# ----- the OpenAI shapes -----------------------------------------------------------------------
def test_chat_completion_with_the_openai_client(client, engine):
    reply = client.chat.completions.create(model=MODEL, temperature=0, extra_body=PHASE_CAPS,
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
    assert reply.usage.completion_tokens == reply_tokens(engine, run)
    assert reply.usage.prompt_tokens == len(engine.encode(run.prompt))


def test_a_request_without_temperature_samples_as_the_model_says(client, engine):
    assert engine.sampling["temperature"] == 0.0  # the teaching model's generation config: greedy
    reply = client.chat.completions.create(model=MODEL, extra_body=PHASE_CAPS,
                                           messages=[{"role": "user", "content": QUESTION}])
    assert reply.choices[0].message.content == chat_turn_of(engine, alone(engine, QUESTION))


def test_chat_stream_sends_the_turn_in_order_and_branch_tokens_live(client, engine):
    stream = client.chat.completions.create(model=MODEL, temperature=0, extra_body=PHASE_CAPS, stream=True,
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
    reply = client.completions.create(model=MODEL, prompt=QUESTION, temperature=0, extra_body=PHASE_CAPS)
    assert reply.choices[0].text == completion_of(engine, alone(engine, QUESTION))
    assert [m.id for m in client.models.list().data] == ["medverse-teaching-model"]
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["mode"] == "dag"


@pytest.mark.parametrize("mode", ["sequential", "request"])
def test_a_plan_and_mode_in_the_body(client, engine, mode):
    plan = "Transient Step 1: fever -> infection; Dependency: []\nTransient Step 2: infection -> antibiotics; " \
           "Dependency: [1]"
    reply = client.chat.completions.create(model=MODEL, temperature=0, stream=True,
                                           messages=[{"role": "user", "content": QUESTION}],
                                           extra_body={"mode": mode, "plan": plan, **PHASE_CAPS})
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
    body = {"text": prompt, **PHASE_CAPS, "sampling_params": {"temperature": 0, "top_p": 0.95, "max_new_tokens": 1900,
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
            "model": MODEL, "temperature": 0, **PHASE_CAPS, "messages": [{"role": "user", "content": q}]})
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
Q = [{"role": "user", "content": "q"}]
CHAT, TEXT = "/v1/chat/completions", "/v1/completions"


@pytest.mark.parametrize("path,body,status,param", [
    (CHAT, b"{not json", 400, "body"),
    (CHAT, {"messages": Q, "mode": "fast"}, 400, "mode"),
    (CHAT, {"messages": Q, "max_tokens": -5}, 400, "max_tokens"),
    (CHAT, {"messages": Q, "max_tokens": 10**9}, 400, "max_tokens"),
    (CHAT, {"model": MODEL}, 400, "messages"),
    (CHAT, {"messages": [{"role": "system", "content": "be brief"}]}, 400, "messages"),
    (CHAT, {"messages": [*Q, {"role": "assistant", "content": "a"}]}, 400, "messages"),
    (CHAT, {"messages": Q, "n": 99}, 400, "n"),
    (CHAT, {"messages": Q, "plan": "no outline"}, 400, "plan"),
    (CHAT, {"messages": Q, "temperature": -1}, 400, "temperature"),
    # a non-string content part, a lone surrogate: 400 naming the field (once a 500)
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, 400,
     "messages.0.content.0.text"),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400,
     "messages.0.content.0.type"),
    (CHAT, b'{"messages": [{"role": "user", "content": "\\ud800 lone"}]}', 400, "messages.0.content"),
    (CHAT, b'{"messages": [{"role": "user", "content": "q"}], "stop": ["\\udfff"]}', 400, "stop.0"),
    (CHAT, b'{"messages": [{"role": "user", "content": "caf\xe9"}]}', 400, "body"),  # not UTF-8
    (CHAT, {"messages": Q, "seed": 2**64}, 400, "seed"),
    (CHAT, {"messages": Q, "seed": -(2**63) - 1}, 400, "seed"),
    (CHAT, {"messages": Q, "model": "gpt-4o"}, 404, "model"),  # vLLM's answer to an unknown model
    (CHAT, {"messages": Q, "response_format": {"type": "json_object"}}, 400, "response_format"),
    (CHAT, {"messages": Q, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools"),
    (CHAT, {"messages": Q, "top_logprobs": 3}, 400, "top_logprobs"),
    (TEXT, {"model": MODEL}, 400, "prompt"),
    (TEXT, {"prompt": "q", "model": "nope"}, 404, "model"),
    (TEXT, {"prompt": "q", "echo": True}, 400, "echo"),
    ("/generate", {"sampling_params": {}}, 400, "text"),
    ("/generate", {"text": "q", "sampling_params": {"max_new_tokens": 0}}, 400, "sampling_params.max_new_tokens"),
    ("/generate", {"text": "q", "sampling_params": {"seed": 2**70}}, 400, "sampling_params.seed"),
    ("/generate", [1, 2], 400, "body"),
    ("/generate", {"text": "q" * (2 << 20)}, 413, "body"),
])
def test_bad_requests_are_refused_by_name(server, path, body, status, param):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    with httpx.Client(timeout=60) as http:  # one keep-alive connection: the refusal must not reset it
        r = http.post(server + path, content=content, headers={"Content-Type": "application/json"})
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert err["param"] == param and err["message"] and err["code"] == status and "Traceback" not in r.text
        assert err["type"] == ("NotFoundError" if status == 404 else "invalid_request_error")
        assert http.get(f"{server}/health").json()["status"] == "ok"  # same client, the connection still serves


@pytest.mark.parametrize("method,path,status", [("GET", "/nowhere", 404), ("GET", CHAT, 405),
                                                ("DELETE", "/health", 405),
                                                ("GET", "/docs", 404), ("GET", "/openapi.json", 404)])
def test_unknown_routes_and_methods_answer_in_the_openai_error_shape(server, method, path, status):
    r = httpx.request(method, server + path, timeout=30)
    assert r.status_code == status and r.json()["error"]["code"] == status and r.json()["error"]["message"]


def test_an_oversized_chunked_body_is_a_413_in_the_openai_shape(server):
    def body():  # no Content-Length: the limit must hold while reading
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}]}'

    r = httpx.post(f"{server}{CHAT}", content=body(), headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["param"] == "body", r.text
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_openai_client_sees_a_bad_request_error(client):
    from openai import BadRequestError, NotFoundError

    with pytest.raises(BadRequestError, match="unknown mode"):
        client.chat.completions.create(model=MODEL, messages=Q, extra_body={"mode": "fast"})
    with pytest.raises(NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=Q)


def test_a_client_that_disconnects_frees_its_branches(server):
    before = httpx.get(f"{server}/health").json()
    body = {"model": MODEL, "temperature": 1.0, "max_tokens": 1800, "stream": True,
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
