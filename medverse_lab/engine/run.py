"""What a run leaves behind: its tokens, their cache slots, the text, the layout, timings.

The cache holds slots in decode order (branches interleaved); a :class:`Run` maps each slot
to its logical place: ``logical_index = segment start + offset within the branch``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from ..data.questions import parse_answer
from ..layout import Layout, request_repeats
from ..plan import Plan
from .events import ForcedClose, PlanRejected, Rerun
from .kv import cache_bytes

@dataclass(frozen=True, slots=True)
class TokenEvent:
    """One token as it enters the cache: what ``on_token`` receives and ``stream`` yields.

    ``branch`` is ``"prefix"`` (plan included), a step id or ``"conclusion"``; ``time_s``
    counts from the start of the run (or rerun). In mode ``request`` the earlier blocks a
    branch feeds again before its own tokens are context, not output, and are not reported
    (``run.tokens`` has them, with ``repeat_of``).
    """

    branch: str
    text: str
    position: int
    time_s: float
    token_id: int
    cache_index: int
    forced: bool
    forward_call: int
    logprob: float | None = None      # with logprobs asked: the sampled token's log-probability
    top_logprobs: tuple = ()          # and its most likely alternatives, ((token id, logprob), ...)


@dataclass
class Slots:
    """Per cache slot, in cache order: which branch, where in it, and how it was decoded."""

    branch: list = field(default_factory=list)
    offset: list = field(default_factory=list)  # index within the branch's segment
    position: list = field(default_factory=list)
    token: list = field(default_factory=list)
    forced: list = field(default_factory=list)
    call: list = field(default_factory=list)
    time: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.token)

    def append(self, branch, offset, position, token, forced, call, time) -> None:
        self.branch.append(branch)
        self.offset.append(offset)
        self.position.append(position)
        self.token.append(token)
        self.forced.append(forced)
        self.call.append(call)
        self.time.append(time)

    def select(self, keep: list[int]) -> "Slots":
        cols = {name: [getattr(self, name)[i] for i in keep] for name in self.__dataclass_fields__}
        return Slots(**cols)


class Run:
    """A finished MedVerse run.

    Attributes: ``plan`` (the plan executed), ``steps`` (step id -> body text), ``conclusion``
    (text inside ``<Conclusion>``), ``answer`` (option letter or ``None``), ``text`` (whole
    trace in logical order, prompt included; ``ml.parse_trace(run.text)`` reads it),
    ``layout`` (an :class:`~medverse_lab.Layout` with the token ids), ``mode`` (the mode
    decoded: the requested one, or ``sequential`` after a plan error), ``events`` (see
    :mod:`~medverse_lab.engine.events`; ``plan_error``, ``forced_closes``, ``rerun_event``),
    ``timings`` (seconds: ``prefill``, ``plan``, ``steps``, ``conclusion``, ``total``) and
    ``tokens`` (a polars DataFrame, one row per token in logical order).

    Memory: a run keeps its key/value cache so that :meth:`Engine.rerun` can reuse it:
    ``2 x layers x kv_heads x head_dim x tokens x bytes per value`` (``run.cache_bytes``;
    about 4 KiB per token for the 5M-parameter benchmark model in float32, 192 KiB per
    token for a 14B Qwen2.5 in bfloat16). :meth:`release` frees it.
    """

    def __init__(self, *, question, prompt, plan: Plan, mode, requested_mode, seed, settings, slots: Slots,
                 cache, spans, separator_len, tokenizer, piece, events, timings, generation=0, backend="local",
                 token_exact=True):
        #: what computed the tokens: ``local`` (this process's model and cache), ``vllm`` or ``remote``
        self.backend = backend
        #: False when a remote server returned text, not token ids (re-tokenized here)
        self.token_exact = token_exact
        self.question, self.prompt, self.plan, self.mode = question, prompt, plan, mode
        self.requested_mode, self.seed, self.settings = requested_mode, seed, dict(settings)
        self.events, self.timings, self.generation = events, timings, generation
        self._slots, self._cache, self._spans = slots, cache, spans
        self._tok, self._piece = tokenizer, piece
        lens: dict[str, int] = {}
        for b in slots.branch:
            lens[b] = lens.get(b, 0) + 1
        ids_by_cache = slots.token
        repeats = request_repeats(plan) if mode == "request" else None
        for branch in [*plan.ids, "conclusion"]:  # a request's own tokens follow the blocks it repeats
            lens[branch] = lens.get(branch, 0) - sum(lens[r] for r in (repeats or {}).get(branch, ()))
        self.layout = Layout(plan, lens.get("prefix", 0), {s: lens[s] for s in plan.ids},
                             lens.get("conclusion", 0), separator_len, token_ids=[0] * len(slots), repeats=repeats)
        start = {seg.branch: seg.start for seg in self.layout.segments}
        self._logical = [start[b] + o for b, o in zip(slots.branch, slots.offset)]
        ids = [0] * len(slots)
        for i, t in zip(self._logical, ids_by_cache):
            ids[i] = t
        self.layout.token_ids = tuple(ids)

    # ----- text ------------------------------------------------------------------------
    def _decode(self, ids) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _span_text(self, branch: str) -> str:
        seg, (a, b) = self.layout.segment(branch), self._spans[branch]
        return self._decode(self.layout.token_ids[seg.start + a: seg.start + b])

    @cached_property
    def text(self) -> str:
        """The whole trace in logical order (prompt, plan, steps in plan order, conclusion);
        in mode ``request`` each block once, as the trace writes it (``layout.base``)."""
        return self._decode(self.layout.base.token_ids)

    @cached_property
    def steps(self) -> dict[str, str]:
        """Step id -> body text (between the header line and ``</Step>``)."""
        return {sid: self._span_text(sid) for sid in self.plan.ids}

    @cached_property
    def conclusion(self) -> str:
        """The text between ``<Conclusion>`` and ``</Conclusion>``."""
        return self._span_text("conclusion")

    @property
    def answer(self) -> str | None:
        """The option letter the conclusion chose (``Answer: B``), or ``None``."""
        return parse_answer(self.conclusion)

    @cached_property
    def tokens(self):
        """A polars DataFrame, one row per token in logical order: ``branch``,
        ``logical_index``, ``cache_index`` (null unless the local backend decoded the run:
        a stock engine's cache is its own), ``position``, ``token_id``, ``text``, ``forced``,
        ``forward_call``, ``time_s``, and ``repeat_of``: in mode ``request`` the step whose
        block a token repeats at the head of its branch's request (else null)."""
        import polars as pl

        s = self._slots
        spans = {b: self.layout.repeated_spans(b) for b in self.layout.repeats}
        repeat_of = [next((r for r, a, z in spans.get(b, ()) if a <= i < z), None)
                     for b, i in zip(s.branch, self._logical)]
        df = pl.DataFrame({
            "branch": s.branch, "logical_index": self._logical,
            "cache_index": list(range(len(s))) if self.backend == "local" else [None] * len(s),
            "position": s.position, "token_id": s.token, "text": [self._piece(t) for t in s.token],
            "forced": s.forced, "forward_call": s.call, "time_s": s.time, "repeat_of": repeat_of,
        }, schema={"branch": pl.String, "logical_index": pl.Int64, "cache_index": pl.Int64, "position": pl.Int64,
                   "token_id": pl.Int64, "text": pl.String, "forced": pl.Boolean, "forward_call": pl.Int64,
                   "time_s": pl.Float64, "repeat_of": pl.String})
        return df.sort("logical_index")

    def requests(self) -> dict[str, tuple[list[int], list[int]]]:
        """Mode ``request``: per step and ``conclusion``, ``(prompt, sampled)``: the token ids
        one request to a stock serving engine starts from (the prefix, the repeated blocks,
        the header) and the tokens this run sampled after them, in order (up to the first
        token the engine forced: a forced ``</Step>`` is not sampled). Greedy decoding of
        ``prompt`` alone, plain causal, gives ``sampled`` again."""
        if self.mode != "request":
            raise ValueError(f"this run was decoded {self.mode!r}; only a 'request' run is one request per branch")
        df = self.tokens
        prefix = df.filter(df["branch"] == "prefix")["token_id"].to_list()
        out = {}
        for branch in [*self.plan.ids, "conclusion"]:
            rows = df.filter(df["branch"] == branch)
            ids, forced = rows["token_id"].to_list(), rows["forced"].to_list()
            first = forced.index(False) if False in forced else len(ids)
            last = forced.index(True, first) if True in forced[first:] else len(ids)
            out[branch] = (prefix + ids[:first], ids[first:last])
        return out

    @property
    def answer_note(self) -> str | None:
        """Why there is no answer (``None`` when there is one): the engine closed the
        conclusion (its token limit, or a stray tag), or it ended without naming an option
        the way :attr:`answer` reads one."""
        if self.answer is not None:
            return None
        close = next((e for e in self.forced_closes if e.branch == "conclusion"), None)
        if close is not None and close.reason == "limit":
            return (f"no answer: the conclusion reached its limit of {close.limit} tokens before it named an option "
                    "(\"Answer: X\")")
        if close is not None:
            return "no answer: the model wrote a tag that cannot appear in a conclusion, so the engine closed it"
        if not self.conclusion.strip():
            return "no answer: the conclusion is empty"
        return "no answer: the conclusion does not name an option as \"Answer: X\" (X a letter A-J)"

    @property
    def warnings(self) -> list[str]:
        """What a reader of this run must not miss, one sentence each: the model's plan was
        rejected (and what was decoded instead), a branch the engine closed itself, no
        answer, or an answer that is not among the question's options."""
        out = []
        error = self.plan_error
        if error is not None:
            problems = [str(p) for p in getattr(error.error, "problems", ())] or [str(error.error)]
            more = f"; {len(problems) - 1} more" if len(problems) > 1 else ""
            out.append(f"the model's plan did not validate ({problems[0]}{more}): decoded {error.fallback} "
                       f"with the salvaged plan instead of {error.requested_mode}")
        for close in self.forced_closes:
            what = "the plan" if close.branch == "prefix" else "the conclusion" if close.branch == "conclusion" \
                else f"step {close.branch}"
            why = f"reached its limit of {close.limit} tokens" if close.reason == "limit" else \
                f"wrote {close.token!r}, a tag that cannot appear there"
            if close.branch != "conclusion" or self.answer is not None:  # a closed conclusion: answer_note says it
                out.append(f"{what} was closed by the engine: it {why}")
        if self.answer is None:
            out.append(self.answer_note)
        else:
            from ..data.questions import parse_user_turn

            options = parse_user_turn(self.question)[1]
            if options and self.answer not in options:
                out.append(f"the answer {self.answer} is not one of the question's options ({', '.join(options)})")
        return out

    # ----- events ----------------------------------------------------------------------
    @property
    def plan_error(self):
        """The :class:`~medverse_lab.engine.PlanRejected` event when the model's plan did not
        parse (``.error`` lists the problems, ``.fallback`` the mode run instead), else ``None``."""
        return next((e for e in self.events if isinstance(e, PlanRejected)), None)

    @property
    def forced_closes(self) -> list:
        """The :class:`~medverse_lab.engine.ForcedClose` events: branches the engine closed
        itself (a length limit or a stray tag), in the order it closed them."""
        return [e for e in self.events if isinstance(e, ForcedClose)]

    @property
    def rerun_event(self):
        """For a run made by :meth:`Engine.rerun`, its :class:`~medverse_lab.engine.Rerun`
        event (which step, what was decoded again); ``None`` for a fresh run."""
        return next((e for e in self.events if isinstance(e, Rerun)), None)

    # ----- cache -----------------------------------------------------------------------
    @property
    def cache_bytes(self) -> int:
        """Bytes of the key/value cache this run holds (0 once released)."""
        return cache_bytes(self._cache)

    @property
    def cache_len(self) -> int:
        """Number of cache slots held (one per token while not released)."""
        return 0 if self._cache is None else self._cache.get_seq_length()

    def release(self) -> None:
        """Drop the key/value cache (the run stays readable; :meth:`Engine.rerun` then refuses it)."""
        self._cache = None

    def __repr__(self) -> str:
        return (f"Run(mode={self.mode!r}, steps={len(self.plan)}, tokens={self.layout.T}, "
                f"answer={self.answer!r}, total={self.timings.get('total', 0):.2f}s)")


class RunStream:
    """Iterate to receive, in order, a :class:`TokenEvent` per token as it is decoded and
    the lifecycle events (:mod:`~medverse_lab.engine.events`) as they happen; afterwards
    ``.run`` holds the finished :class:`Run`.

    >>> stream = engine.stream("A 54-year-old ...")
    >>> for ev in stream:
    ...     if isinstance(ev, ml.engine.TokenEvent): print(ev.branch, ev.text)
    ...     elif isinstance(ev, ml.engine.StepEnd): print("step", ev.branch, "done")
    >>> stream.run.answer
    """

    def __init__(self, events):
        self._events = events
        self.run: Run | None = None

    def __iter__(self):
        self.run = yield from self._events
