"""``medverse-lab serve``: the engine behind HTTP, in the shapes clients already speak.

- ``POST /generate``: SGLang's native endpoint, which the public MedVerse example client
  calls (``text``, ``sampling_params`` -> ``text``, ``meta_info``);
- ``POST /v1/chat/completions`` and ``POST /v1/completions``: the OpenAI shapes, with
  ``stream: true`` as server-sent events;
- ``GET /health``, ``GET /v1/models``.

Every request decodes with the Petri-net scheduler (the model's mode, or ``mode`` in the
body) inside one continuous batch shared by all requests (:mod:`.worker`). Replies carry
the whole MedVerse turn as text and a ``medverse`` object: the plan, each step's text, the
conclusion, the answer, the mode and the timings.

``max_new_tokens`` / ``max_tokens`` caps every phase of the turn (the plan, each step, the
conclusion), as the engine's limits do; ``stop`` strings cut the returned text.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..engine.events import StepEnd
from ..engine.run import TokenEvent
from ..errors import PlanError
from ..prompt import THINK_PREFIX, build_prompt, chat_prefix, user_turn
from .worker import Ticket, Worker

#: the most tokens a request may ask for per phase
MAX_TOKENS = 32768
#: the largest request body accepted, in bytes
MAX_BODY = 1 << 20


class ApiError(Exception):
    """A request the server refuses: ``status``, the offending ``param`` and why."""

    def __init__(self, param: str | None, message: str, status: int = 400):
        super().__init__(message)
        self.param, self.message, self.status = param, message, status


# ----- request shapes --------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SamplingParams(_Body):
    temperature: float | None = Field(None, ge=0, le=100)  # None: the model's generation config
    top_p: float | None = Field(None, gt=0, le=1)
    max_new_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    stop: str | list[str] | None = None
    skip_special_tokens: bool = True
    seed: int | None = None
    sampling_seed: int | None = None


class GenerateRequest(_Body):
    text: str = Field(min_length=1)
    sampling_params: SamplingParams = SamplingParams()
    stream: bool = False
    mode: str | None = None
    plan: str | None = None


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.get("text", "") for part in self.content if part.get("type") == "text")


class _OpenAIBody(_Body):
    model: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)  # None: the model's generation config
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    mode: str | None = None
    plan: str | None = None


class ChatRequest(_OpenAIBody):
    messages: list[Message] = Field(min_length=1)

    @field_validator("messages")
    @classmethod
    def _has_user_turn(cls, messages):
        if not any(m.role == "user" and m.text().strip() for m in messages):
            raise ValueError("needs a non-empty message with role 'user' (the question)")
        return messages


class CompletionRequest(_OpenAIBody):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt):
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ValueError("one prompt per request")
            prompt = prompt[0]
        if not prompt.strip():
            raise ValueError("is empty")
        return prompt


# ----- the app ---------------------------------------------------------------------------------
def create_app(engine, *, mode: str | None = None, max_batch: int = 8, model_name: str | None = None,
               max_body: int = MAX_BODY, worker: Worker | None = None) -> FastAPI:
    """A FastAPI app serving ``engine``; ``mode`` overrides the model's, ``max_batch`` caps
    how many requests decode together, ``max_body`` the request size in bytes. The app
    decodes in a thread of its own unless given a ``worker`` the caller runs."""
    mode = engine.check_mode(mode or engine.default_mode)
    name = model_name or getattr(engine.config, "_name_or_path", None) or "medverse-lab"
    worker = worker or Worker(engine, max_batch=max_batch)
    created = int(time.time())
    app = FastAPI(title="medverse-lab", description=__doc__.split("\n\n")[0])
    app.state.worker, app.state.engine = worker, engine
    app.router.on_shutdown.append(worker.close)

    @app.exception_handler(ApiError)
    async def _api_error(_request, exc: ApiError):
        return _error(exc.status, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc: RequestValidationError):
        errors = exc.errors()
        if errors[0].get("type") == "json_invalid":
            return _error(400, f"the request body is not valid JSON: {errors[0].get('msg')}", "body")
        if errors[0].get("type") == "model_attributes_type":
            return _error(400, "the request body must be a JSON object (send Content-Type: application/json)", "body")
        where = [".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body" for e in errors]
        text = "; ".join(f"{w}: {e.get('msg', 'invalid').removeprefix('Value error, ')}" for w, e in zip(where, errors))
        return _error(400, text, where[0])

    @app.exception_handler(Exception)
    async def _crash(_request, exc: Exception):  # never a traceback on the wire
        return _error(500, f"internal error: {type(exc).__name__}", None, "server_error")

    app.add_middleware(_BodyLimit, limit=max_body)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name, "mode": mode, "running": worker.running, **worker.stats}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created,
                                            "owned_by": "medverse-lab"}]}

    def start(question: str, prompt: str, body, temperature, top_p, max_tokens, seed) -> Ticket:
        limits = {} if max_tokens is None else {
            "max_plan_tokens": min(512, max_tokens), "max_step_tokens": min(256, max_tokens),
            "max_conclusion_tokens": min(256, max_tokens)}
        try:
            run_mode = engine.check_mode(body.mode) if body.mode is not None else mode
        except ValueError as exc:
            raise ApiError("mode", str(exc)) from None
        try:
            d = engine.decoder(question, mode=run_mode, plan=body.plan, seed=0 if seed is None else seed,
                               temperature=temperature, top_p=top_p, emit=body.stream, prompt=prompt, **limits)
        except PlanError as exc:
            raise ApiError("plan", str(exc)) from None
        except ValueError as exc:
            raise ApiError(str(exc).split(" ", 1)[0] if " = " in str(exc) else None, str(exc)) from None
        return worker.submit(Ticket(d, asyncio.get_running_loop()))

    async def finished(request: Request, ticket: Ticket):
        """The run, or None when the client went away first (its branches are dropped)."""
        task = asyncio.ensure_future(ticket.result())
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=0.25)
                if done:
                    return task.result()
                if await request.is_disconnected():
                    worker.cancel(ticket)
                    task.cancel()
                    return None
        except asyncio.CancelledError:
            worker.cancel(ticket)
            raise

    @app.post("/generate")
    async def generate(body: GenerateRequest, request: Request):
        if body.stream:
            raise ApiError("stream", "streaming is served on /v1/chat/completions and /v1/completions")
        sp = body.sampling_params
        question, prompt = _prompt_of(engine, body.text)
        ticket = start(question, prompt, body, sp.temperature, sp.top_p, sp.max_new_tokens,
                       sp.seed if sp.seed is not None else sp.sampling_seed)
        t0 = time.perf_counter()
        run = await finished(request, ticket)
        if run is None:
            return JSONResponse({}, status_code=499)
        text, reason, matched = _reply(engine, run, sp.stop, sp.skip_special_tokens)
        return {"text": text, "meta_info": {
            "id": uuid.uuid4().hex, "finish_reason": {"type": reason, **({"matched": matched} if matched else {})},
            "prompt_tokens": _prompt_len(engine, run),
            "completion_tokens": run.layout.base.T - _prompt_len(engine, run),
            "cached_tokens": 0, "e2e_latency": time.perf_counter() - t0, "medverse": _medverse(run)}}

    async def openai(request: Request, body, question: str, prompt: str, kind: str):
        ticket = start(question, prompt, body, body.temperature, body.top_p,
                       body.max_completion_tokens or body.max_tokens, body.seed)
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
        if body.stream:
            return StreamingResponse(_sse(engine, worker, ticket, rid, name, kind, body.stop),
                                     media_type="text/event-stream")
        run = await finished(request, ticket)
        if run is None:
            return JSONResponse({}, status_code=499)
        text, reason, _ = _reply(engine, run, body.stop, False)
        if kind == "chat":  # the whole assistant turn, <Think> ... </Think>, balanced (the prompt held its first line)
            text = THINK_PREFIX + text
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}
                  if kind == "chat" else {"index": 0, "text": text, "finish_reason": reason, "logprobs": None})
        n_prompt = _prompt_len(engine, run)
        return {"id": rid, "object": "chat.completion" if kind == "chat" else "text_completion",
                "created": int(time.time()), "model": name, "choices": [choice],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": run.layout.base.T - n_prompt,
                          "total_tokens": run.layout.base.T}, "medverse": _medverse(run)}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        system = next((m.text() for m in body.messages if m.role in ("system", "developer")), engine.system_prompt)
        question = next(m.text() for m in reversed(body.messages) if m.role == "user" and m.text().strip())
        prompt = chat_prefix(engine.tokenizer, user_turn(question), system) + THINK_PREFIX
        return await openai(request, body, question, prompt, "chat")

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        question, prompt = _prompt_of(engine, body.prompt)
        return await openai(request, body, question, prompt, "text")

    return app


# ----- helpers ---------------------------------------------------------------------------------
def _error(status: int, message: str, param: str | None, kind: str = "invalid_request_error"):
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}},
                        status_code=status)


def _prompt_of(engine, text: str) -> tuple[str, str]:
    """``(question, prompt)`` for raw text: a rendered chat prompt is used as it is (with the
    assistant's ``<Think>`` line added if missing); anything else is the question."""
    if "<|im_start|>" in text or text.endswith(THINK_PREFIX):
        return text, text if text.endswith(THINK_PREFIX) else text + THINK_PREFIX
    return text, build_prompt(engine.tokenizer, text, engine.system_prompt)


def _prompt_len(engine, run) -> int:
    return len(engine.encode(run.prompt))


def _cut(text: str, stop) -> tuple[str, str | None]:
    """``text`` up to the first stop string, and the stop string that cut it."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    hits = [(text.find(s), s) for s in stops if s and s in text]
    if not hits:
        return text, None
    at, s = min(hits)
    return text[:at], s


def _reply(engine, run, stop, skip_special: bool) -> tuple[str, str, str | None]:
    """The completion text (after the prompt), its finish reason and the stop string hit."""
    ids = run.layout.base.token_ids[_prompt_len(engine, run):]
    text = engine.tokenizer.decode(list(ids), skip_special_tokens=skip_special, clean_up_tokenization_spaces=False)
    text, matched = _cut(text, stop)
    limited = any(e.reason == "limit" for e in run.forced_closes)
    return text, "length" if limited and matched is None else "stop", matched


def _medverse(run) -> dict:
    error = run.plan_error
    return {"mode": run.mode, "requested_mode": run.requested_mode,
            "plan": [{"id": s.id, "description": s.description, "deps": list(s.deps)} for s in run.plan.steps],
            "outline": run.plan.to_outline(), "steps": run.steps, "conclusion": run.conclusion,
            "answer": run.answer, "timings": run.timings, "plan_error": str(error.error) if error else None,
            "forced_closes": [{"branch": e.branch, "reason": e.reason} for e in run.forced_closes]}


async def _sse(engine, worker: Worker, ticket: Ticket, rid: str, model: str, kind: str, stop):
    """Server-sent events: the turn's text in logical order (the plan as it is written,
    each step whole once it and the steps before it are done, the conclusion as written),
    each chunk with the branch tokens just decoded in ``medverse.tokens``; the last chunk
    has the finish reason and the ``medverse`` summary."""
    created, obj = int(time.time()), "chat.completion.chunk" if kind == "chat" else "text_completion"
    d = ticket.decoder
    blocks: dict[str, list[str]] = {}
    closed: set[str] = set()
    flushed: set[str] = set()
    sent = ""

    def chunk(content: str, tokens=(), finish=None, extra=None, role=False):
        delta = {**({"role": "assistant"} if role else {}), "content": content}
        choice = {"index": 0, "finish_reason": finish, **({"delta": delta} if kind == "chat" else
                                                            {"text": content, "logprobs": None})}
        body = {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice],
                "medverse": {"tokens": [{"branch": e.branch, "text": e.text} for e in tokens], **(extra or {})}}
        return f"data: {json.dumps(body)}\n\n"

    def logical(items) -> tuple[str, list]:
        """The text these events add in logical order (a step's block once it and every
        step before it have ended), and their token events."""
        out, tokens = [], []
        for e in items:
            if isinstance(e, StepEnd):
                closed.add(e.branch)
                for sid in d.plan.ids:
                    if sid not in flushed:
                        if sid not in closed:
                            break
                        flushed.add(sid)
                        out.append("".join(blocks.pop(sid, ())))
            elif isinstance(e, TokenEvent):
                tokens.append(e)
                if e.branch == "prefix" or e.branch == "conclusion":
                    out.append(e.text)
                else:
                    blocks.setdefault(e.branch, []).append(e.text)
        return "".join(out), tokens

    try:
        sent = THINK_PREFIX if kind == "chat" else ""  # a chat reply is the whole turn, <Think> ... </Think>
        if d.given_plan is not None:  # a given plan is prefilled with the prompt, not decoded: send it first
            tags = engine.tags
            sent += engine.decode([tags["<Plan>"], *engine.encode(f"\n{d.given_plan.to_outline()}\n"),
                                  tags["</Plan>"], *engine.ids.exec_line])
        if kind == "chat" or sent:
            yield chunk(sent, role=kind == "chat")
        while True:
            what, payload = await ticket.updates.get()
            if what == "events":
                new, tokens = logical(payload)
                text, matched = _cut(sent + new, stop)
                if matched is not None:
                    worker.cancel(ticket)
                    yield chunk(text[len(sent):], tokens, finish="stop", extra={"stopped_by": matched})
                    break
                sent += new
                yield chunk(new, tokens)
            elif what == "done":
                _, reason, _ = _reply(engine, payload, None, False)
                yield chunk("", finish=reason, extra={"summary": _medverse(payload)})
                break
            else:
                yield f"data: {json.dumps({'error': {'message': f'internal error: {type(payload).__name__}', 'type': 'server_error'}})}\n\n"
                break
        yield "data: [DONE]\n\n"
    finally:  # the client went away mid-stream (or we are done): free its branches
        if ticket.decoder.running:
            worker.cancel(ticket)


class _BodyLimit:
    """ASGI middleware: refuse a request body over ``limit`` bytes with a 413 JSON error."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = _error(413, f"the request body is over {self.limit} bytes", "body")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_big(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ApiError("body", f"the request body is over {self.limit} bytes", 413)
            return message

        return await self.app(scope, limited, send)
