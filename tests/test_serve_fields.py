"""The request fields clients use, against a real `medverse-lab serve` process, with the
clients people use: the `openai` package, LangChain's ChatOpenAI and LiteLLM. Each reply is
compared with the engine's own run of the same prompt."""

from __future__ import annotations

import time

import httpx
import pytest
import torch

from medverse_lab.engine.decode import decode_alone
from medverse_lab.engine.engine import _drain
from medverse_lab.prompt import build_prompt, conversation_prompt
from medverse_lab.serve.protocol import ChatCompletionResponse, CompletionResponse, GenerateResponse

from serve_util import (MODEL, PHASE_CAPS, QUESTION, alone, chat_turn_of, client, engine,  # noqa: F401 - fixtures
                        reply_tokens, server)

pytestmark = pytest.mark.slow
ASK = [{"role": "user", "content": QUESTION}]


def run_prompt(engine, question, prompt, **kw):
    """The engine's run of an explicit prompt (what the server decodes for a conversation)."""
    d = engine.decoder(question, prompt=prompt, **{"temperature": 0, **PHASE_CAPS, **kw})
    return _drain(decode_alone(d, engine.executor()), None)


# ----- usage ----------------------------------------------------------------------------------
def test_stream_options_include_usage_sends_a_final_usage_chunk(client, engine):
    chunks = list(client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}, extra_body=PHASE_CAPS))
    run = alone(engine, QUESTION)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == reply_tokens(engine, run)
    assert chunks[-1].usage.prompt_tokens == len(engine.encode(run.prompt))
    assert all(c.usage is None for c in chunks[:-1])
    plain = list(client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, stream=True,
                                                max_tokens=16))
    assert all(c.usage is None for c in plain)  # not asked: not sent


# ----- logprobs ---------------------------------------------------------------------------------
def test_chat_logprobs_are_the_models(client, engine):
    reply = client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, logprobs=True, top_logprobs=3,
                                           max_tokens=40)
    content = reply.choices[0].logprobs.content
    assert "".join(t.token for t in content) == reply.choices[0].message.content.removeprefix("<Think>\n")
    sampled = [t for t in content if not t.model_extra["forced"]]
    assert len(sampled) >= 20
    for t in sampled:  # greedy: the chosen token is the most likely one
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token
        assert t.logprob == pytest.approx(t.top_logprobs[0].logprob) and t.logprob <= 0
    # the first sampled token's log-probability, from the model itself
    prompt = build_prompt(engine.tokenizer, QUESTION, engine.system_prompt)
    ids = engine.encode(prompt) + [engine.tags["<Plan>"]]
    with torch.inference_mode():
        lp = torch.log_softmax(engine.model(torch.tensor([ids])).logits[0, -1].float(), -1)
    first = content.index(sampled[0])
    assert first == 1  # after the <Plan> tag, which the model writes (the prompt ends with <Think>)
    assert sampled[0].logprob == pytest.approx(lp.max().item(), abs=1e-4)


def test_completion_logprobs_and_streamed_chat_logprobs(client):
    reply = client.completions.create(model=MODEL, prompt=QUESTION, temperature=0, logprobs=2, max_tokens=30)
    lp = reply.choices[0].logprobs
    assert "".join(lp.tokens) == reply.choices[0].text and len(lp.token_logprobs) == len(lp.tokens) == 30
    assert all(len(t) <= 2 for t in lp.top_logprobs) and max(lp.token_logprobs) <= 0
    chunks = list(client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, stream=True, logprobs=True,
                                                 max_tokens=30))
    tokens = [t.token for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "".join(tokens) == text.removeprefix("<Think>\n") and len(tokens) == 30


# ----- the conversation, n, stop, max_tokens -----------------------------------------------------
def test_earlier_turns_are_part_of_the_prompt(client, engine):
    first = client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=60)
    history = [{"role": "system", "content": "You are a careful clinician."}, *ASK,
               {"role": "assistant", "content": first.choices[0].message.content},
               {"role": "user", "content": "Which option did you choose? A. yes B. no"}]
    reply = client.chat.completions.create(model=MODEL, messages=history, temperature=0, extra_body=PHASE_CAPS)
    question, prompt = conversation_prompt(engine.tokenizer, history, engine.system_prompt)
    assert question == history[-1]["content"] and QUESTION in prompt and "careful clinician" in prompt
    assert reply.usage.prompt_tokens == len(engine.encode(prompt)) > first.usage.prompt_tokens + 60
    assert reply.choices[0].message.content == chat_turn_of(engine, run_prompt(engine, question, prompt))


def test_the_prompt_is_built_in_one_place(engine):
    from medverse_lab.prompt import THINK_PREFIX, chat_prefix, user_turn

    tok = engine.tokenizer
    one = conversation_prompt(tok, [{"role": "user", "content": QUESTION}], engine.system_prompt)[1]
    assert one == build_prompt(tok, QUESTION, engine.system_prompt) == \
        chat_prefix(tok, user_turn(QUESTION), engine.system_prompt) + THINK_PREFIX
    assert alone(engine, QUESTION).prompt == one  # the engine's prompt is the server's


def test_n_choices_are_the_runs_of_consecutive_seeds(client, engine):
    reply = client.chat.completions.create(model=MODEL, messages=ASK, temperature=1.0, seed=5, n=3,
                                           extra_body=PHASE_CAPS)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    runs = [engine.run(QUESTION, temperature=1.0, seed=5 + i, **PHASE_CAPS) for i in range(3)]
    assert [c.message.content for c in reply.choices] == [chat_turn_of(engine, r) for r in runs]
    assert reply.usage.completion_tokens == sum(reply_tokens(engine, r) for r in runs)
    chunks = list(client.chat.completions.create(model=MODEL, messages=ASK, temperature=1.0, seed=5, n=2,
                                                 stream=True, extra_body=PHASE_CAPS))
    for i in range(2):
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
        assert text == reply.choices[i].message.content


def test_stop_ends_decoding_early_and_usage_counts_what_was_decoded(client, engine, server):
    full = chat_turn_of(engine, alone(engine, QUESTION))
    before = httpx.get(f"{server}/health").json()
    reply = client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, stop=["</Plan>"],
                                           extra_body=PHASE_CAPS)
    for _ in range(100):  # the worker drops the run at its next step
        after = httpx.get(f"{server}/health").json()
        if after["running"] == 0:
            break
        time.sleep(0.1)
    text = reply.choices[0].message.content
    assert text == full[:full.index("</Plan>")] and reply.choices[0].finish_reason == "stop"
    assert after["cancelled"] == before["cancelled"] + 1 and after["finished"] == before["finished"]  # not decoded on
    n_plan = len(engine.encode(text.removeprefix("<Think>\n")))
    assert n_plan <= reply.usage.completion_tokens <= n_plan + 4  # the tokens up to the stop, a token or so past
    assert reply.usage.completion_tokens < reply_tokens(engine, alone(engine, QUESTION))


def test_max_tokens_caps_the_whole_reply(client, engine):
    run = alone(engine, QUESTION)
    reply = client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=37)
    assert reply.usage.completion_tokens == 37 and reply.choices[0].finish_reason == "length"
    reply_ids = run.layout.base.token_ids[len(engine.encode(run.prompt)):]
    assert reply.choices[0].message.content == "<Think>\n" + engine.decode(reply_ids[:37])  # Phase I is in order
    # the per-phase caps are explicit extra fields
    short = client.chat.completions.create(model=MODEL, messages=ASK, temperature=0,
                                           extra_body={"max_step_tokens": 5})
    mv = short.model_extra["medverse"]
    assert short.choices[0].finish_reason == "length" and mv["steps"]
    assert {c["reason"] for c in mv["forced_closes"]} == {"limit"}


def test_replies_are_the_documented_models(server):
    ask = {"model": MODEL, "temperature": 0, "max_tokens": 20}
    r = httpx.post(f"{server}/v1/chat/completions", json={**ask, "messages": ASK}, timeout=60).json()
    ChatCompletionResponse.model_validate(r)
    CompletionResponse.model_validate(httpx.post(f"{server}/v1/completions", json={**ask, "prompt": QUESTION},
                                                 timeout=60).json())
    GenerateResponse.model_validate(httpx.post(f"{server}/generate", timeout=60, json={
        "text": QUESTION, "sampling_params": {"max_new_tokens": 20}}).json())


@pytest.mark.parametrize("extra,param", [({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
                                          "response_format"),
                                         ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools")])
def test_what_is_not_served_is_refused_by_name(client, extra, param):
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=ASK, **extra)
    assert err.value.body["param"] == param


# ----- LangChain and LiteLLM ---------------------------------------------------------------------
def test_langchain_chat_openai(server, engine):
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(base_url=f"{server}/v1", api_key="unused", model=MODEL, temperature=0,
                                      max_retries=0, timeout=120, extra_body=PHASE_CAPS, stream_usage=True)
    run = alone(engine, QUESTION)
    msg = llm.invoke(QUESTION)
    assert msg.content == chat_turn_of(engine, run)
    assert msg.usage_metadata["output_tokens"] == reply_tokens(engine, run)
    assert msg.usage_metadata["input_tokens"] == len(engine.encode(run.prompt))
    total = None
    for chunk in llm.stream(QUESTION):
        total = chunk if total is None else total + chunk
    assert total.content == msg.content and total.usage_metadata == msg.usage_metadata
    cut = llm.invoke(QUESTION, stop=["</Plan>"])
    assert cut.content == msg.content[:msg.content.index("</Plan>")]
    assert cut.usage_metadata["output_tokens"] < msg.usage_metadata["output_tokens"]


def test_litellm(server, engine, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: no price list download
    litellm = pytest.importorskip("litellm")
    kw = dict(model=f"openai/{MODEL}", api_base=f"{server}/v1", api_key="unused", messages=ASK, temperature=0,
              timeout=120, extra_body=PHASE_CAPS)
    run = alone(engine, QUESTION)
    reply = litellm.completion(**kw)
    assert reply.choices[0].message.content == chat_turn_of(engine, run)
    assert reply.usage.completion_tokens == reply_tokens(engine, run)
    chunks = list(litellm.completion(**kw, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == chat_turn_of(engine, run)
    usage = [c.usage for c in chunks if getattr(c, "usage", None)]
    assert usage and usage[-1].completion_tokens == reply_tokens(engine, run)
    cut = litellm.completion(**kw, stop=["</Plan>"])
    assert cut.choices[0].message.content == chat_turn_of(engine, run).split("</Plan>")[0]
    assert cut.usage.completion_tokens < reply_tokens(engine, run)
