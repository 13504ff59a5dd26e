"""What the server does with a request, apart from HTTP: the handlers behind the routes.

A checked request (:mod:`.protocol`) becomes one :class:`~.worker.Ticket` per choice (``n``),
each a decoder over the prompt built by :mod:`medverse_lab.prompt` (the same function the
engine uses). A :class:`Reply` turns the worker's token and lifecycle events into the
reply's text in logical order (the plan as written, each step whole once it and the steps
before it are done, the conclusion), its log-probabilities and its usage; the same code
feeds a stream and a plain reply, so they cannot differ. A stop string or ``max_tokens``
ends decoding there (the branches are freed), and ``usage`` counts what was decoded.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field

from ..engine.events import StepEnd
from ..engine.run import Run, TokenEvent
from ..errors import PlanError
from ..prompt import THINK_PREFIX, build_prompt, conversation_prompt
from .protocol import (ApiError, ChatChoice, ChatCompletionChunk, ChatCompletionResponse, ChatMessage, ChatRequest,
                       ChatStreamChoice, ChoiceLogprobs, CompletionChoice, CompletionChunk, CompletionLogprobs,
                       CompletionRequest, CompletionResponse, CompletionStreamChoice, DeltaMessage, ErrorInfo,
                       ErrorResponse, GenerateMeta, GenerateRequest, GenerateResponse, InvalidRequest, MedverseInfo,
                       NotFound, Overloaded, ServerError, StreamTokens, TokenLogprob, TopLogprob, UsageInfo)
from .worker import Ticket, Worker


@dataclass
class Delta:
    """What one update added to a reply: text, log-probabilities, the branch tokens, and
    the finish reason when it ended."""

    text: str = ""
    logprobs: list = field(default_factory=list)
    tokens: list = field(default_factory=list)
    finish: str | None = None


class Reply:
    """One choice, assembled from its ticket's updates in logical order."""

    def __init__(self, engine, decoder, stop=None, skip_special: bool = False):
        self.e, self.d = engine, decoder
        self.stops = [stop] if isinstance(stop, str) else [s for s in (stop or []) if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1  # text held back: a stop may be starting
        self.skip_special = skip_special
        self.ids: list[int] = []        # reply tokens in logical order
        self.entries: list = []          # per id: (token id, logprob or None, top alternatives, forced)
        self.blocks: dict[str, list[TokenEvent]] = {}
        self.closed: set[str] = set()
        self.flushed: set[str] = set()
        self.full, self.sent = "", 0     # text decoded so far, and how much of it went out
        self.prefix_off = self.read_off = 0
        self.decoded = 0                 # reply tokens decoded (usage), whether sent or not
        self.finish: str | None = None
        self.run: Run | None = None
        self.stopped_by: str | None = None
        if decoder.given_plan is not None:  # a given plan is prefilled with the prompt: it opens the reply
            tags = engine.tags
            given = [tags["<Plan>"], *engine.encode(f"\n{decoder.given_plan.to_outline()}\n"), tags["</Plan>"],
                     *engine.ids.exec_line]
            self.ids += given
            self.entries += [(t, None, (), True) for t in given]
            self.decoded += len(given)

    # ----- feeding ---------------------------------------------------------------------------
    def feed(self, kind: str, payload) -> Delta:
        """Take one update of the ticket; raises the worker's error (an :class:`ApiError`)."""
        start, delta = len(self.ids), Delta()
        if kind == "events":
            for e in payload:
                if isinstance(e, StepEnd):
                    self.closed.add(e.branch)
                    for sid in self.d.plan.ids:  # flush the steps done, in plan order
                        if sid in self.flushed:
                            continue
                        if sid not in self.closed:
                            break
                        self.flushed.add(sid)
                        self._take(self.blocks.pop(sid, ()))
                elif isinstance(e, TokenEvent):
                    self.decoded += 1
                    delta.tokens.append({"branch": e.branch, "text": e.text})
                    if e.branch in ("prefix", "conclusion"):
                        self._take((e,))
                    else:
                        self.blocks.setdefault(e.branch, []).append(e)
        elif kind == "done":
            self.run, self.finish = payload, _finish_reason(payload)
        elif kind == "end":  # max_tokens reached: what was decoded of unfinished steps closes the reply
            for sid in (self.d.plan.ids if self.d.plan is not None else ()):
                self._take(self.blocks.pop(sid, ()))
            self.finish = payload
        elif kind == "error":
            raise payload if isinstance(payload, ApiError) else ServerError(
                f"internal error while decoding: {type(payload).__name__}")
        self.full += self._detok(final=self.finish is not None)
        delta.text = self._release()
        delta.logprobs = self.entries[start:]
        delta.finish = self.finish
        return delta

    def _take(self, events) -> None:
        for e in events:
            self.ids.append(e.token_id)
            self.entries.append((e.token_id, e.logprob, e.top_logprobs, e.forced or e.logprob is None))

    def _detok(self, final: bool) -> str:
        """Text of the ids added since the last call. Decoded with a few tokens before them
        (a tokenizer may write a token differently at the start of a text), held back while
        it ends in a partial character."""
        if self.read_off == len(self.ids):
            return ""
        decode = lambda ids: self.e.tokenizer.decode(ids, skip_special_tokens=self.skip_special,
                                                     clean_up_tokenization_spaces=False)
        before = decode(self.ids[self.prefix_off:self.read_off])
        now = decode(self.ids[self.prefix_off:])
        if now.endswith("\ufffd") and not final:
            return ""
        self.prefix_off, self.read_off = self.read_off, len(self.ids)
        return now[len(before):]

    def _release(self) -> str:
        """The text that may go out now: up to a stop string (which ends the reply), and
        while running not the last few characters a stop string may be starting with."""
        if self.stops and self.stopped_by is None:
            hits = [(i, s) for s in self.stops if (i := self.full.find(s, max(0, self.sent - len(s)))) >= 0]
            if hits:
                at, self.stopped_by = min(hits)
                self.full, self.finish = self.full[:at], "stop"
        end = len(self.full) if self.finish is not None else max(self.sent, len(self.full) - self.hold)
        out, self.sent = self.full[self.sent:end], end
        return out

    @property
    def done(self) -> bool:
        return self.finish is not None

    # ----- what the reply says ---------------------------------------------------------------
    def medverse(self) -> MedverseInfo:
        if self.run is None:  # cut before the end (stop string, max_tokens): what is known so far
            return MedverseInfo(mode=self.d.mode, requested_mode=self.d.requested_mode, stopped_by=self.stopped_by,
                                plan=_plan(self.d.plan) if self.d.plan is not None else None)
        return _medverse(self.run, self.stopped_by)

    def token_logprobs(self, entries) -> list[TokenLogprob]:
        piece = self.e.piece
        return [TokenLogprob(token=piece(t), logprob=lp or 0.0, bytes=list(piece(t).encode()), forced=forced,
                             top_logprobs=[TopLogprob(token=piece(i), logprob=v, bytes=list(piece(i).encode()))
                                           for i, v in top])
                for t, lp, top, forced in entries]

    def completion_logprobs(self, entries, offset: int) -> CompletionLogprobs:
        piece, out = self.e.piece, CompletionLogprobs()
        for t, lp, top, _ in entries:
            out.tokens.append(piece(t))
            out.token_logprobs.append(lp or 0.0)
            out.top_logprobs.append({piece(i): v for i, v in top})
            out.text_offset.append(offset)
            offset += len(piece(t))
        return out


def _finish_reason(run: Run) -> str:
    return "length" if any(e.reason == "limit" for e in run.forced_closes) else "stop"


def _plan(plan) -> list[dict]:
    return [{"id": s.id, "description": s.description, "deps": list(s.deps)} for s in plan.steps]


def _medverse(run: Run, stopped_by: str | None = None) -> MedverseInfo:
    error = run.plan_error
    return MedverseInfo(mode=run.mode, requested_mode=run.requested_mode, plan=_plan(run.plan),
                        outline=run.plan.to_outline(), steps=run.steps, conclusion=run.conclusion, answer=run.answer,
                        timings=run.timings, plan_error=str(error.error) if error else None,
                        forced_closes=[{"branch": e.branch, "reason": e.reason} for e in run.forced_closes],
                        stopped_by=stopped_by)


# ----- the service -----------------------------------------------------------------------------
class Service:
    """The handlers: requests in, replies (or server-sent event lines) out.

    ``max_model_len`` is the context: a longer prompt is refused, and a reply never runs
    past it. A request waits at most ``queue_timeout`` seconds for room in the batch."""

    def __init__(self, engine, worker: Worker, *, mode: str, model_name: str, max_model_len: int,
                 queue_timeout: float = 60.0):
        self.e, self.worker, self.mode, self.name = engine, worker, mode, model_name
        self.max_model_len, self.queue_timeout = max_model_len, queue_timeout
        self.created = int(time.time())

    def check_model(self, model: str | None) -> None:
        """vLLM's rule: a request names the served model (or none)."""
        if model is not None and model != self.name:
            raise NotFound(f"The model `{model}` does not exist.", "model")

    # ----- starting runs -----------------------------------------------------------------------
    async def start(self, question: str, prompt: str, body, *, where: str, temperature, top_p, cap, seed, n=1,
                    logprobs: int | None = None) -> list[Ticket]:
        """Checked decoders for the request, queued; returns once every one has joined the
        batch (503 if the queue is full or they wait over ``queue_timeout``)."""
        if logprobs is not None and self.e.backend != "local":
            raise InvalidRequest(f"log-probabilities need the local backend (this server computes on "
                                 f"{self.e.backend})", "logprobs")
        try:
            run_mode = self.e.check_mode(body.mode) if body.mode is not None else self.mode
        except ValueError as exc:
            raise InvalidRequest(str(exc), "mode") from None
        caps = {k: v for k in ("max_plan_tokens", "max_step_tokens", "max_conclusion_tokens")
                if (v := getattr(body, k)) is not None}
        seed = 0 if seed is None else seed

        def make(i: int):
            try:  # tokenizing a long prompt is real work: off the event loop
                return self.e.decoder(question, mode=run_mode, plan=body.plan, seed=_wrap(seed + i),
                                      temperature=temperature, top_p=top_p, emit=True, prompt=prompt, **caps)
            except PlanError as exc:
                raise InvalidRequest(str(exc), "plan") from None

        decoders = [await asyncio.to_thread(make, 0)]
        d = decoders[0]
        if d.prompt_len >= self.max_model_len:
            raise InvalidRequest(f"This model's maximum context length is {self.max_model_len} tokens; the prompt "
                                 f"is {d.prompt_len} tokens. Shorten the {where}.", where)
        room = self.max_model_len - d.prompt_len
        if cap is not None and cap > room:
            raise InvalidRequest(f"This model's maximum context length is {self.max_model_len} tokens; the prompt "
                                 f"is {d.prompt_len} tokens and max_tokens asks for {cap} more (at most {room}).",
                                 "max_tokens")
        decoders += [await asyncio.to_thread(make, i) for i in range(1, n)]
        loop = asyncio.get_running_loop()
        tickets = []
        try:
            for d in decoders:
                d.logprobs = logprobs
                tickets.append(self.worker.submit(Ticket(d, loop, cap=min(cap or room, room))))
            waited = asyncio.gather(*(t.admitted.wait() for t in tickets))
            try:
                await asyncio.wait_for(waited, self.queue_timeout)
            except asyncio.TimeoutError:
                if any(self.worker.withdraw(t) for t in tickets):
                    raise Overloaded(f"the request waited {self.queue_timeout:g} s in the queue without room in "
                                     "the batch (--queue-timeout); retry later", retry_after=5) from None
        except BaseException:
            for t in tickets:
                self.worker.cancel(t)
            raise
        return tickets

    async def updates(self, tickets: list[Ticket], replies: list[Reply], disconnected=None):
        """``(choice index, Delta)`` as updates arrive, until every reply is done; a reply
        that ends early (stop string) frees its branches, and so does a client that goes
        away (``disconnected()`` is polled) or stops reading."""
        merged: asyncio.Queue = asyncio.Queue()

        async def pump(i: int):
            while True:
                update = await tickets[i].updates.get()
                await merged.put((i, update))
                if update[0] != "events":
                    return

        pumps = [asyncio.ensure_future(pump(i)) for i in range(len(tickets))]
        left, checked = len(tickets), time.monotonic()
        try:
            while left:
                try:
                    i, (kind, payload) = await asyncio.wait_for(merged.get(), 0.25)
                except asyncio.TimeoutError:
                    i = None
                if disconnected is not None and time.monotonic() - checked >= 0.25:
                    checked = time.monotonic()
                    if await disconnected():
                        return
                if i is None or replies[i].done:  # nothing new, or the rest of a reply cut by a stop string
                    continue
                delta = replies[i].feed(kind, payload)
                if delta.finish is not None:
                    left -= 1
                    if kind == "events":  # a stop string: the run is not needed any more
                        self.worker.cancel(tickets[i])
                yield i, delta
        finally:
            for p in pumps:
                p.cancel()
            for t, r in zip(tickets, replies):
                if not r.done or r.run is None:
                    self.worker.cancel(t)

    # ----- the endpoints -------------------------------------------------------------------------
    async def chat(self, body: ChatRequest, disconnected):
        body.check()
        self.check_model(body.model)
        question, prompt = conversation_prompt(self.e.tokenizer, [{"role": m.role, "content": m.text()}
                                                                  for m in body.messages], self.e.system_prompt)
        return await self._openai(body, question, prompt, "chat", "messages", disconnected)

    async def completion(self, body: CompletionRequest, disconnected):
        body.check()
        self.check_model(body.model)
        question, prompt = prompt_of(self.e, body.prompt)
        return await self._openai(body, question, prompt, "text", "prompt", disconnected)

    async def _openai(self, body, question, prompt, kind, where, disconnected):
        tickets = await self.start(question, prompt, body, where=where, temperature=body.temperature,
                                   top_p=body.top_p, cap=body.cap, seed=body.seed, n=body.n,
                                   logprobs=body.n_logprobs)
        replies = [Reply(self.e, t.decoder, body.stop) for t in tickets]
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
        if body.stream:
            usage = body.stream_options is not None and body.stream_options.include_usage
            return self._stream(tickets, replies, rid, kind, usage, body.n_logprobs is not None)
        texts = ["" for _ in replies]
        async for i, delta in self.updates(tickets, replies, disconnected):
            texts[i] += delta.text
        if not all(r.done for r in replies):
            return None  # the client went away
        usage = self._usage(tickets, replies)
        if kind == "chat":  # the whole assistant turn, <Think> ... </Think> (the prompt held its first line)
            choices = [ChatChoice(index=i, message=ChatMessage(content=THINK_PREFIX + text), finish_reason=r.finish,
                                  medverse=r.medverse(),
                                  logprobs=ChoiceLogprobs(content=r.token_logprobs(r.entries))
                                  if body.n_logprobs is not None else None)
                       for i, (r, text) in enumerate(zip(replies, texts))]
            return ChatCompletionResponse(id=rid, created=int(time.time()), model=self.name, choices=choices,
                                          usage=usage, medverse=choices[0].medverse)
        choices = [CompletionChoice(index=i, text=text, finish_reason=r.finish, medverse=r.medverse(),
                                    logprobs=r.completion_logprobs(r.entries, 0)
                                    if body.n_logprobs is not None else None)
                   for i, (r, text) in enumerate(zip(replies, texts))]
        return CompletionResponse(id=rid, created=int(time.time()), model=self.name, choices=choices, usage=usage,
                                  medverse=choices[0].medverse)

    def _usage(self, tickets, replies) -> UsageInfo:
        p, c = tickets[0].decoder.prompt_len, sum(r.decoded for r in replies)
        return UsageInfo(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)

    async def _stream(self, tickets, replies, rid, kind, include_usage, logprobs):
        """Server-sent event lines: the turn's text in logical order, each chunk also with
        the tokens each branch just decoded (``medverse.tokens``); the last chunk of a choice
        has its finish reason and the ``medverse`` summary; with ``include_usage`` a final
        chunk carries the usage; an error mid-stream is an error event; then ``[DONE]``."""
        created = int(time.time())

        def chunk(i, text, tokens=(), finish=None, extra=None, first=False, entries=()):
            mv = StreamTokens(tokens=list(tokens), **(extra or {}))
            r = replies[i]
            if kind == "chat":
                lp = ChoiceLogprobs(content=r.token_logprobs(entries)) if logprobs else None
                c = ChatStreamChoice(index=i, delta=DeltaMessage(role="assistant" if first else None, content=text),
                                     finish_reason=finish, logprobs=lp)
                out = ChatCompletionChunk(id=rid, created=created, model=self.name, choices=[c], medverse=mv)
            else:
                lp = r.completion_logprobs(entries, 0) if logprobs else None
                c = CompletionStreamChoice(index=i, text=text, finish_reason=finish, logprobs=lp)
                out = CompletionChunk(id=rid, created=created, model=self.name, choices=[c], medverse=mv)
            return _sse(out.model_dump(exclude_none=True))

        try:
            for i, r in enumerate(replies):
                if kind == "chat":
                    yield chunk(i, THINK_PREFIX, first=True)
            async for i, delta in self.updates(tickets, replies):
                r = replies[i]
                if delta.finish is None:
                    if delta.text or delta.tokens:
                        yield chunk(i, delta.text, delta.tokens, entries=delta.logprobs)
                else:
                    yield chunk(i, delta.text, delta.tokens, delta.finish, entries=delta.logprobs,
                                extra={"summary": r.medverse(), "stopped_by": r.stopped_by})
            if include_usage:
                cls = ChatCompletionChunk if kind == "chat" else CompletionChunk
                yield _sse(cls(id=rid, created=created, model=self.name, choices=[],
                               usage=self._usage(tickets, replies)).model_dump(exclude_none=True))
        except ApiError as exc:  # the server drains, or decoding failed: say so in the stream
            yield _sse(exc.body())
        except Exception as exc:  # noqa: BLE001 - never a silent cut
            yield _sse(ErrorResponse(error=ErrorInfo(message=f"internal error: {type(exc).__name__}",
                                                     type="server_error", code=500)).model_dump())
        yield "data: [DONE]\n\n"

    async def generate(self, body: GenerateRequest, disconnected):
        if body.stream:
            raise InvalidRequest("streaming is served on /v1/chat/completions and /v1/completions", "stream")
        sp = body.sampling_params
        question, prompt = prompt_of(self.e, body.text)
        t0 = time.perf_counter()
        tickets = await self.start(question, prompt, body, where="text", temperature=sp.temperature,
                                   top_p=sp.top_p, cap=sp.max_new_tokens,
                                   seed=sp.seed if sp.seed is not None else sp.sampling_seed)
        reply = Reply(self.e, tickets[0].decoder, sp.stop, sp.skip_special_tokens)
        text = ""
        async for _, delta in self.updates(tickets, [reply], disconnected):
            text += delta.text
        if not reply.done:
            return None
        reason = {"type": reply.finish, **({"matched": reply.stopped_by} if reply.stopped_by else {})}
        return GenerateResponse(text=text, meta_info=GenerateMeta(
            id=uuid.uuid4().hex, finish_reason=reason, prompt_tokens=tickets[0].decoder.prompt_len,
            completion_tokens=reply.decoded, e2e_latency=time.perf_counter() - t0, medverse=reply.medverse()))


def _wrap(seed: int) -> int:
    """``seed + i`` for the i-th choice, kept in the int64 range."""
    return (seed + 2 ** 63) % 2 ** 64 - 2 ** 63


def _sse(obj) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def prompt_of(engine, text: str) -> tuple[str, str]:
    """``(question, prompt)`` for raw text: a rendered chat prompt is used as it is (with the
    assistant's ``<Think>`` line added if missing); anything else is the question."""
    if "<|im_start|>" in text or text.endswith(THINK_PREFIX):
        return text, text if text.endswith(THINK_PREFIX) else text + THINK_PREFIX
    return text, build_prompt(engine.tokenizer, text, engine.system_prompt)
