"""The run lifecycle: the branches of one run while it decodes, and the one
continuous-batching loop that drives many runs.

A :class:`Decoder` is one run while it decodes: its branches (the plan, the steps, the
conclusion), the slots it owns, its schedule, its events. It does not compute tokens: an
*executor* does, for every running branch of every member run at once. An executor has
``members``, ``__len__``, ``join(decoder)``, ``step()`` (feed each running branch's chunk,
hand each decoder the tokens sampled for it with :meth:`Decoder.absorb`, return the
members that finished) and ``remove(decoder, keep_cache)``. :class:`Batch` (here) computes
them with a transformers model in one key/value cache; :mod:`.vllm_backend` with a vLLM
engine in process; :mod:`.remote` with an OpenAI-compatible server. :func:`continuous`
is the one loop over an executor that :meth:`Engine.run`, ``run_many``, ``evaluate`` and
the server all use.

:class:`Batch` feeds every running branch of every member run in one forward call, with a
4-D additive mask ``[1, 1, q, past + q]`` and ``position_ids [1, q]``.

What a branch feeds is a *chunk*: every token it already knows (the prompt, ``<Step>`` and
the header, a forced body, ``</Step>`` and the separator) goes in one call, so known text
costs one forward, not one per token. Only the last token of a chunk is sampled from.

Visibility is the segment rule of :func:`medverse_lab.segment_visibility` (the one training
uses) over the run's own slots, and nothing of another run (the batch is block-diagonal);
within a call, a new token sees the new tokens before it that its segment may see.
Positions come from :func:`medverse_lab.segment_starts`, asked each time a step finishes.

In mode ``request`` a step's branch first feeds its ancestors' blocks again, with its
header, as one known chunk in new cache slots that only it sees (the conclusion likewise
with every block): each branch is then the linear sequence a stock engine would decode as
one request, and the run's layout is the request layout (:meth:`Layout.for_requests`).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass

import torch

from ..errors import PlanError
from ..layout import request_repeats
from ..modes import Mode
from ..plan import Plan, Step, parse_outline
from ..prompt import build_prompt
from ..topology import ready_steps, segment_starts, segment_visibility
from .events import Event, ForcedClose, PhaseStart, PlanRejected, Rerun, StepEnd, StepStart
from .kv import new_cache, select_slots
from .run import Run, Slots, TokenEvent
from .sampling import sample

#: description of the single step run when a model-written plan has no usable step
FALLBACK_STEP = "reason about the question step by step"


def salvage_plan(text: str) -> Plan:
    """A valid plan a ``sequential`` run can execute, kept from an outline that failed
    validation: the steps that parse, in increasing number order, with only their backward
    dependencies; one generic step when nothing survives."""
    kept: list[Step] = []
    for s in parse_outline(text)[0]:
        if s.id.isdigit() and int(s.id) >= 1 and (not kept or int(s.id) > int(kept[-1].id)):
            kept.append(Step(s.id, s.description, [d for d in s.deps if d in {k.id for k in kept}]))
    return Plan(kept or [Step("1", FALLBACK_STEP)]).validate()


def positive_int(name: str, value) -> int:
    """``value`` if it is an integer >= 1, else a ``ValueError`` naming ``name`` (a keyword or a flag)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} = {value!r}: must be an integer >= 1")
    return value


@dataclass(frozen=True)
class Settings:
    """How a run samples and where it stops; :meth:`checked` validates user input."""

    seed: int = 0
    temperature: float = 0.7
    top_p: float = 0.95
    max_plan_tokens: int = 512
    max_step_tokens: int = 256
    max_conclusion_tokens: int = 256

    @classmethod
    def checked(cls, **kw) -> "Settings":
        """Settings from keywords, each checked: a ``ValueError`` names the bad one."""
        s = cls(**kw)
        if isinstance(s.seed, bool) or not isinstance(s.seed, int):
            raise ValueError(f"seed = {s.seed!r}: must be an integer")
        t = s.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t < float("inf"):
            raise ValueError(f"temperature = {t!r}: must be a number >= 0 (0 is greedy)")
        if isinstance(s.top_p, bool) or not isinstance(s.top_p, (int, float)) or not 0 < s.top_p <= 1:
            raise ValueError(f"top_p = {s.top_p!r}: must be in (0, 1]")
        for name in ("max_plan_tokens", "max_step_tokens", "max_conclusion_tokens"):
            positive_int(name, getattr(s, name))
        return cls(**{**asdict(s), "temperature": float(t), "top_p": float(s.top_p)})


@dataclass(frozen=True)
class TokenIds:
    """The token ids the decoder forces, encoded once per engine."""

    tags: dict
    separator: tuple       # after </Step>
    exec_line: tuple       # after </Plan>
    conclusion_open: tuple
    conclusion_tail: tuple
    plan_stray: frozenset  # special tokens that end a branch early, per branch kind
    step_stray: frozenset
    conclusion_stray: frozenset

    @classmethod
    def of(cls, tokenizer, encode) -> "TokenIds":
        from ..tokens import TAGS

        tags = {t: tokenizer.convert_tokens_to_ids(t) for t in TAGS}
        special = set(tokenizer.all_special_ids) | set(tags.values())
        return cls(tags=tags, separator=tuple(encode("\n")), exec_line=tuple(encode("\n<Execution>\n")),
                   conclusion_open=tuple(encode("</Execution>\n<Conclusion>")),
                   conclusion_tail=tuple(encode("\n</Think>")),
                   plan_stray=frozenset(special - {tags[t] for t in ("</Plan>", "<Outline>", "</Outline>")}),
                   step_stray=frozenset(special - {tags["</Step>"]}),
                   conclusion_stray=frozenset(special - {tags["</Conclusion>"]}))


@dataclass(kw_only=True, slots=True, eq=False)
class Branch:
    """One growing segment: the plan (inside the prefix), a step, or the conclusion.

    ``pending`` holds the tokens known but not yet fed, as ``(token id, forced)``: the
    next forward feeds them all as one chunk.
    """

    name: str                  # "prefix" (prompt and plan), a step id, or "conclusion"
    kind: str                  # "plan", "step" or "conclusion"
    seg: int                   # the run's segment: 0 prefix, 1..S steps in plan order, S+1 conclusion
    pos: int                   # position id of the next token fed
    offset: int                # index within the segment of the next token fed
    pending: list
    close_id: int
    tail: tuple
    limit: int                 # most body tokens sampled before the close is forced
    stray: frozenset
    span: list                 # [first body offset, end of body offset]
    own_from: int = 0          # offset where its own tokens start (after repeated blocks, in request mode)
    n_sampled: int = 0
    first_sample: int | None = None  # offset of its first sampled token: where its request's prompt ends
    closing: bool = False      # the close tag (and tail) is pending: the branch ends after it
    done: bool = False
    lp: tuple | None = None    # (logprob, top alternatives) of the sampled token pending, with logprobs

    def chunk(self, limit: int | None, prefill: int | None = None) -> list:
        """The tokens this branch feeds in the next forward: all it knows, or at most
        ``limit`` of them for a step or the conclusion, ``prefill`` for the prefix (a long
        prompt fed in chunks, so other runs keep decoding in between)."""
        limit = prefill if self.kind == "plan" else limit
        return self.pending if limit is None else self.pending[:limit]

    def samples_after(self, chunk: list) -> bool:
        """Whether feeding ``chunk`` leaves this branch waiting for a sampled token."""
        return len(chunk) == len(self.pending) and not self.closing

    @classmethod
    def open(cls, name, kind, seg, pos, forced, close_id, tail, limit, stray, offset=0, body=None,
             repeated=()) -> "Branch":
        """A branch that feeds ``repeated`` (earlier blocks, request mode) and ``forced``
        first; with ``body`` its whole block is known."""
        forced = [*repeated, *forced]
        start = offset + len(forced)
        b = cls(name=name, kind=kind, seg=seg, pos=pos, offset=offset, pending=[(t, True) for t in forced],
                close_id=close_id, tail=tuple(tail), limit=limit, stray=stray, span=[start, None],
                own_from=offset + len(repeated))
        if body is not None:
            b.pending += [(t, True) for t in (*body, close_id, *tail)]
            b.span[1], b.closing = start + len(body), True
        return b


_ids = itertools.count()


class Decoder:
    """One run (or rerun) while it decodes; build with :meth:`fresh` or :meth:`resume`,
    drive with a :class:`Batch`, read the result with :meth:`to_run`."""

    def __init__(self, engine, settings: Settings, *, question: str, prompt: str, requested_mode: Mode,
                 emit: bool = False, slots: Slots | None = None, slot_seg=(), calls: int = 0, generation: int = 0):
        self.id = next(_ids)
        self.e, self.ids, self.settings = engine, engine.ids, settings
        self.question, self.prompt, self.requested_mode = question, prompt, requested_mode
        self.generation, self.emit = generation, emit
        self.gen = torch.Generator(device=engine.device).manual_seed(settings.seed)
        self.slots = slots if slots is not None else Slots()
        self.slot_seg = list(slot_seg)
        self.calls = calls                   # forward calls this run took part in
        self.t0 = time.perf_counter()
        self.events: list[Event] = []
        self.running: list[Branch] = []
        self.new: list[Branch] = []          # started during a call; they join the next one
        self.plan: Plan | None = None
        self.given_plan: Plan | None = None
        self.mode = requested_mode
        self.vis = torch.ones(1, 1, dtype=torch.bool, device=engine.device)  # Phase I: the prefix only
        self.sees_all = [True]
        self.spans: dict[str, tuple[int, int]] = {}
        self.marks: dict[str, float] = {}
        self.forced_bodies: dict[str, list[int]] = {}
        self.prefix_len = 0
        self.done: set[str] = set()
        self.started: set[str] = set()
        self.lens: dict[str, int] = {}
        self.blocks: dict[str, list[int]] = {}  # finished steps' own tokens, repeated by request-mode branches
        self.conclusion_started = False
        self.quiet = 0                       # leading slots not reported (the prompt: given, not decoded)
        self.outbox: list = []               # with emit: token and lifecycle events, in order, until taken
        self.token_exact = True              # False when a backend returned text, not token ids
        self.fed: list = []                  # the chunks of the current step (chunks() -> absorb())
        self.unfed_prompt = 0                # prompt tokens (and a given plan) not fed yet
        self.prompt_len = 0
        #: with an int k: each sampled token's log-probability and its k most likely
        #: alternatives go with its TokenEvent (raw logits, before temperature)
        self.logprobs: int | None = None
        self._lp: list = []

    def note(self, event: Event) -> None:
        """Record a lifecycle event (and report it, in order with the tokens, when emitting)."""
        self.events.append(event)
        if self.emit:
            self.outbox.append(event)

    def take(self) -> list:
        """The token and lifecycle events reported since the last call, in order."""
        out, self.outbox = self.outbox, []
        return out

    # ----- construction ---------------------------------------------------------------------
    @classmethod
    def fresh(cls, engine, question: str, mode: Mode, plan: Plan | None, settings: Settings, *, emit=False,
              forced_bodies=None, generation=0, first_events=(), prompt: str | None = None) -> "Decoder":
        """A new run: the prompt (and a given ``plan``) is the first chunk; then Phase I or II.
        ``prompt`` replaces the one built from ``question`` (it must end the assistant's
        ``<Think>`` line)."""
        prompt = build_prompt(engine.tokenizer, question, engine.system_prompt) if prompt is None else prompt
        d = cls(engine, settings, question=question, prompt=prompt, requested_mode=mode, emit=emit,
                generation=generation)
        d.forced_bodies.update(forced_bodies or {})
        for ev in first_events:
            d.note(ev)
        tags, s = d.ids.tags, settings
        forced = [*engine.encode(prompt), tags["<Plan>"]]
        body = None
        if plan is None:
            d.note(PhaseStart("plan", 0.0))
        else:  # the whole prefix is known: prompt, plan and <Execution> line go in one forward
            d.given_plan = plan
            body = engine.encode(f"\n{plan.to_outline()}\n")
        d.quiet = len(forced) - 1 if body is None else len(forced) + len(body) + 1 + len(d.ids.exec_line)
        d.prompt_len, d.unfed_prompt = len(forced) - 1, d.quiet
        d.running.append(Branch.open("prefix", "plan", 0, 0, forced, tags["</Plan>"], d.ids.exec_line,
                                     s.max_plan_tokens, d.ids.plan_stray, body=body))
        return d

    @classmethod
    def resume(cls, engine, run: Run, plan: Plan, step: str, drop: set[str], forced: list[int] | None,
               settings: Settings, generation: int, *, emit=False) -> tuple["Decoder", list[int]]:
        """A rerun of ``run`` that decodes the branches in ``drop`` again; returns the decoder
        and the cache slots of ``run`` it keeps (in order)."""
        keep = [i for i, b in enumerate(run._slots.branch) if b not in drop]
        seg = {sid: i + 1 for i, sid in enumerate(plan.ids)} | {"prefix": 0}
        slots = run._slots.select(keep)
        d = cls(engine, settings, question=run.question, prompt=run.prompt, requested_mode=run.requested_mode,
                emit=emit, slots=slots, slot_seg=[seg[b] for b in slots.branch], calls=max(run._slots.call) + 1,
                generation=generation)
        d.spans = {k: v for k, v in run._spans.items() if k not in drop}
        d.prefix_len = run.layout.prefix_len
        ids = run.layout.token_ids
        d.blocks = {s: list(ids[run.layout.own_start(s):run.layout.segment(s).stop]) for s in plan.ids if s not in drop}
        if forced is not None:
            d.forced_bodies[step] = forced
        kept = [s for s in plan.ids if s not in drop]
        d.marks.update(prefill=0.0, plan=0.0)
        d.note(Rerun(step, tuple(sorted(drop - {"conclusion"}, key=plan.ids.index)), len(keep),
                              settings.seed, forced is not None,
                              plan[step].description if plan[step] != run.plan[step] else None))
        d.start_steps(plan, run.mode, done=kept, lens={s: run.layout.step_lens[s] for s in kept})
        d.running, d.new = d.new, []
        return d, keep

    @property
    def finished(self) -> bool:
        return not self.running

    def now(self) -> float:
        return time.perf_counter() - self.t0

    # ----- one executor step ------------------------------------------------------------
    @property
    def prefilling(self) -> bool:
        """Whether the prompt is still being fed (no token of the reply decoded yet)."""
        return self.unfed_prompt > 0

    def chunks(self, prefill: int | None = None) -> list[tuple[Branch, list]]:
        """What each running branch feeds in this step (empty while it waits for a token);
        ``prefill`` caps the prompt tokens fed now. :meth:`absorb` records these."""
        self.fed = [(b, b.chunk(self.e.step_chunk, prefill)) for b in self.running]
        return self.fed

    def sample(self, logits: torch.Tensor) -> list[int]:
        """Token ids sampled from ``logits`` (a row per branch) with this run's settings
        and generator (and, with :attr:`logprobs`, their log-probabilities)."""
        s = self.settings
        toks = sample(logits, s.temperature, s.top_p, self.gen)
        if self.logprobs is not None:
            lp = torch.log_softmax(logits.float(), dim=-1)
            chosen = lp.gather(-1, toks[:, None]).squeeze(-1).tolist()
            top = lp.topk(self.logprobs, dim=-1) if self.logprobs else None
            self._lp = [(c, tuple(zip(top.indices[i].tolist(), top.values[i].tolist())) if top is not None else ())
                        for i, c in enumerate(chosen)]
        return toks.tolist()

    def absorb(self, sampled: dict, t_abs: float) -> None:
        """Record the chunks just fed (``self.chunks()``, in order) as slots, then move each
        branch on: a closed branch finishes, a branch with a token in ``sampled`` (Branch ->
        token id) takes it; a branch waiting for a token not computed yet (a remote
        backend) waits. Reported tokens and events go to the outbox."""
        t, call, n = t_abs - self.t0, self.calls, len(self.slots)
        self.calls += 1
        lps = dict(zip(sampled, self._lp)) if self.logprobs is not None else {}
        self._lp = []
        for b, chunk in self.fed:
            if b.kind == "plan" and self.unfed_prompt:
                self.unfed_prompt = max(0, self.unfed_prompt - len(chunk))
                if not self.unfed_prompt and "prefill" not in self.marks:
                    self.marks["prefill"] = t
            for tok, forced in chunk:
                self.slots.append(b.name, b.offset, b.pos, tok, forced, call, t)
                self.slot_seg.append(b.seg)
                # not reported: the prompt and, in mode request, the blocks a branch repeats (given, not decoded)
                if self.emit and n >= self.quiet and b.offset >= b.own_from:
                    slot = n if self.e.backend == "local" else None  # a stock engine's cache is its own
                    lp, top = b.lp if not forced and b.lp is not None else (None, ())
                    self.outbox.append(TokenEvent(b.name, self.e.piece(tok), b.pos, t, tok, slot, forced, call,
                                                  lp, top))
                n, b.offset, b.pos = n + 1, b.offset + 1, b.pos + 1
            b.pending = b.pending[len(chunk):]
            b.lp = None
        if not self.unfed_prompt and "prefill" not in self.marks:  # a rerun: nothing to prefill
            self.marks["prefill"] = t
        for b in self.running:
            if b.pending:  # more known tokens to feed first
                continue
            if b.closing:  # its close tag and tail were in this chunk
                b.done = True
                self.finish(b)
            elif b in sampled:
                if b.first_sample is None:
                    b.first_sample = b.offset
                b.lp = lps.get(b)
                self.advance(b, sampled[b])
        self.running = [b for b in self.running if not b.done] + self.new
        self.new = []
        if not self.running:
            self.marks["end"] = self.now()

    def advance(self, b: Branch, tok: int) -> None:
        """``b``'s next chunk after sampling ``tok``: the token, or its close tag and tail."""
        if tok == b.close_id:
            b.pending = [(tok, False), *((t, True) for t in b.tail)]
        elif b.n_sampled >= b.limit or tok in b.stray:
            reason = "limit" if b.n_sampled >= b.limit else "stray-token"
            self.note(ForcedClose(b.name, reason, self.e.piece(tok), b.limit, self.calls - 1))
            b.pending = [(b.close_id, True), *((t, True) for t in b.tail)]
        else:
            b.pending = [(tok, False)]
            b.n_sampled += 1
            return
        b.closing, b.span[1] = True, b.offset

    # ----- phases ------------------------------------------------------------------------
    def finish(self, b: Branch) -> None:
        self.spans[b.name if b.kind != "plan" else "plan"] = tuple(b.span)
        t = self.now()
        if b.kind == "plan":
            self.marks["plan"] = t
            self.prefix_len = b.offset
            if self.given_plan is not None:
                self.start_steps(self.given_plan, self.requested_mode)
            else:
                a, z = b.span
                self.start_steps(*self.read_plan(self.e.decode(self.slots.token[a:z])))
        elif b.kind == "step":
            self.lens[b.name] = b.offset
            if self.repeats:  # mode request: later requests repeat this step's own tokens
                s = self.slots
                self.blocks[b.name] = [tok for br, o, tok in zip(s.branch, s.offset, s.token)
                                       if br == b.name and o >= b.own_from]
            self.done.add(b.name)
            self.note(StepEnd(b.name, t, self.calls - 1, tokens=b.offset - b.own_from))
            self.schedule()
        else:
            self.marks["conclusion"] = t

    def read_plan(self, text: str) -> tuple[Plan, str]:
        """The model's plan, or (plan error) a salvaged plan run ``sequential``."""
        try:
            return Plan.from_outline(text).validate(), self.requested_mode
        except PlanError as err:
            plan = salvage_plan(text)
            self.note(PlanRejected(err, self.requested_mode, "sequential", plan, text))
            return plan, "sequential"

    def start_steps(self, plan: Plan, mode: Mode, done=(), lens=None) -> None:
        """Phase II: the plan's segment visibility, then the first steps of the schedule."""
        self.plan, self.mode = plan, mode
        self.seg = {sid: i + 1 for i, sid in enumerate(plan.ids)}
        self.seg["prefix"], self.seg["conclusion"] = 0, len(plan) + 1
        self.vis = segment_visibility(plan, mode).to(self.e.device)
        self.sees_all = self.vis.all(1).tolist()
        self.repeats = request_repeats(plan) if mode == "request" else {}
        self.done, self.lens = set(done), dict(lens or {})
        self.started, self.conclusion_started = set(done), False
        self.note(PhaseStart("steps", self.now(), mode))
        self.schedule()

    def startable(self) -> list[str]:
        """Steps the scheduler of ``self.mode`` starts now (the mode's visibility rule)."""
        return [sid for sid in ready_steps(self.plan, self.mode, self.done) if sid not in self.started]

    def schedule(self) -> None:
        e, ids, plan, s = self.e, self.ids, self.plan, self.settings
        ready = self.startable()
        if ready:
            starts = segment_starts(plan, self.prefix_len, self.lens, self.mode)
            for sid in ready:
                forced = [ids.tags["<Step>"], *e.encode(f" {plan[sid].header()}\n")]
                self.new.append(Branch.open(sid, "step", self.seg[sid], starts[sid], forced, ids.tags["</Step>"],
                                            ids.separator, s.max_step_tokens, ids.step_stray,
                                            body=self.forced_bodies.get(sid), repeated=self.repeated(sid)))
                self.started.add(sid)
                self.note(StepStart(sid, self.now(), self.calls, position=starts[sid]))
        if len(self.done) == len(plan) and not self.conclusion_started:
            self.conclusion_started = True
            t = self.now()
            self.marks["steps"] = t
            self.note(PhaseStart("conclusion", t))
            start = segment_starts(plan, self.prefix_len, self.lens, self.mode)["conclusion"]
            self.new.append(Branch.open("conclusion", "conclusion", self.seg["conclusion"], start,
                                        ids.conclusion_open, ids.tags["</Conclusion>"], ids.conclusion_tail,
                                        s.max_conclusion_tokens, ids.conclusion_stray,
                                        repeated=self.repeated("conclusion")))

    def repeated(self, branch: str) -> list[int]:
        """The blocks ``branch``'s request repeats before its own tokens (request mode; else none)."""
        return [t for r in self.repeats.get(branch, ()) for t in self.blocks[r]]

    # ----- the result ---------------------------------------------------------------------
    def to_run(self, cache) -> Run:
        """The finished :class:`Run` (``cache`` holds this run's slots in order, or None)."""
        m = self.marks
        timings = {"prefill": m.get("prefill", 0.0), "plan": m["plan"] - m.get("prefill", 0.0),
                   "steps": m["steps"] - m["plan"], "conclusion": m["end"] - m["steps"], "total": m["end"]}
        return Run(question=self.question, prompt=self.prompt, plan=self.plan, mode=self.mode,
                   requested_mode=self.requested_mode, seed=self.settings.seed, settings=asdict(self.settings),
                   slots=self.slots, cache=cache, spans=self.spans, separator_len=len(self.ids.separator),
                   tokenizer=self.e.tokenizer, piece=self.e.piece, events=self.events, timings=timings,
                   generation=self.generation, backend=self.e.backend, token_exact=self.token_exact)


class Batch:
    """Runs that share one forward call per step and one key/value cache.

    The cache is block-diagonal: a run's tokens see only its own slots, so each run decodes
    exactly as it would alone. A finished run leaves (its slots are cut out of the cache)
    and a new one may join at any step: continuous batching.
    """

    def __init__(self, engine, cache=None):
        self.e, self.model = engine, engine.model
        self.cache = cache if cache is not None else new_cache(engine.model.config)
        self.members: list[Decoder] = []
        empty = torch.empty(0, dtype=torch.long, device=engine.device)
        self.owner, self.seg = empty, empty  # per cache slot: the Decoder.id it belongs to, its segment there
        # sdpa takes a boolean mask as is; eager *adds* the mask to the scores, so it gets 0 / -inf floats
        self.bool_mask = engine.model.config._attn_implementation == "sdpa"
        #: chunked prefill: a prompt longer than ``prefill_chunk`` tokens is fed in a cache
        #: of its own (the *lane*), that many tokens per call while other runs decode
        #: (``prefill_chunk_idle`` while none does), and joins the shared cache when whole.
        #: Lane calls take at most ``lane_share`` of the batch's own call time while both
        #: have work, so a short request's latency grows by about that fraction (plus the
        #: lane call it waits for when it arrives) while a long prompt is fed.
        #: None (the default, as ``run`` and ``run_many`` use it) feeds a prompt in one call.
        self.prefill_chunk: int | None = None
        self.prefill_chunk_idle: int | None = None
        self.lane: list[tuple[Decoder, "Batch"]] = []
        self._spent = [0.0, 0.0]  # seconds of batch and lane calls while both had work
        self.lane_share = 0.5

    def __len__(self) -> int:
        return len(self.members) + len(self.lane)

    @property
    def prefilling(self) -> list[Decoder]:
        """The runs whose prompt is still being fed in the lane."""
        return [d for d, _ in self.lane]

    def add(self, d: Decoder) -> None:
        """``d`` joins; its existing slots (a rerun's) must be at the end of the cache."""
        if not d.calls:  # a fresh run's clock starts when it joins, not while it waits
            d.t0 = time.perf_counter()
        self.members.append(d)
        self.owner = torch.cat([self.owner, self.owner.new_full((len(d.slots),), d.id)])
        self.seg = torch.cat([self.seg, torch.tensor(d.slot_seg, dtype=torch.long, device=self.seg.device)])

    def join(self, d: Decoder) -> None:
        """``d`` (a fresh run) joins a running batch: its prompt chunk is encoded in a forward
        of its own (in the batch it would attend over every other run's slots, all masked
        out), then its slots are appended to the shared cache."""
        if self.prefill_chunk is not None and d.unfed_prompt > self.prefill_chunk:
            solo = Batch(self.e)
            solo.add(d)
            self.lane.append((d, solo))
            return
        if not self.members:
            self.add(d)
            return
        solo = Batch(self.e)
        solo.add(d)
        solo._step()
        self._merge(d, solo)

    def _merge(self, d: Decoder, solo: "Batch") -> None:
        """``d``, alone in ``solo``, moves into this batch: its slots go to the end of the cache."""
        cache = solo.remove(d)
        if not len(self.owner):
            self.cache = cache
        else:
            with torch.inference_mode():
                for src, dst in zip(cache.layers, self.cache.layers):
                    dst.update(src.keys, src.values)
        self.add(d)

    def step(self) -> list[Decoder]:
        """One forward call: over every member's chunks (each member absorbs its sampled
        tokens), or one chunk of the prompt being fed in the lane. Returns the members that
        finished (still in the batch: take them out with :meth:`remove`)."""
        if self.lane and (not self.members or self._spent[1] < self.lane_share * self._spent[0]):
            d, solo = self.lane[0]
            t = time.perf_counter()
            solo._step(self.prefill_chunk if self.members else self.prefill_chunk_idle)
            if self.members:
                self._spent[1] += time.perf_counter() - t
            if not d.prefilling:  # the prompt is in: the run decodes in the shared cache from now on
                self.lane.pop(0)
                self._merge(d, solo)
            return [d] if d.finished else []
        t = time.perf_counter()
        done = self._step()
        if self.lane:
            self._spent[0] += time.perf_counter() - t
        else:
            self._spent = [0.0, 0.0]
        return done

    @torch.inference_mode()
    def _step(self, prefill: int | None = None) -> list[Decoder]:
        ids, pos, owner, seg, last, fed = [], [], [], [], [], []
        for d in self.members:
            chunks = d.chunks(prefill)
            for b, chunk in chunks:
                k = len(chunk)
                ids += [t for t, _ in chunk]
                pos += range(b.pos, b.pos + k)
                owner += [d.id] * k
                seg += [b.seg] * k
                last.append(len(ids) - 1)
            fed.append(chunks)
        dev = self.e.device
        owner, seg = torch.tensor(owner, device=dev), torch.tensor(seg, device=dev)
        mask = self.mask(owner, seg)
        out = self.model(input_ids=torch.tensor([ids], device=dev), position_ids=torch.tensor([pos], device=dev),
                         attention_mask=mask, use_cache=True, logits_to_keep=torch.tensor(last, device=dev),
                         **{self.e.cache_kw: self.cache})
        t = time.perf_counter()
        self.owner, self.seg = torch.cat([self.owner, owner]), torch.cat([self.seg, seg])
        logits, at = out.logits[0], 0
        for d, chunks in zip(self.members, fed):
            need = [i for i, (b, chunk) in enumerate(chunks) if b.samples_after(chunk)]
            toks = d.sample(logits[at:at + len(chunks)][need]) if need else []
            d.absorb({chunks[i][0]: tok for i, tok in zip(need, toks)}, t)
            at += len(chunks)
        return [d for d in self.members if d.finished]

    def mask(self, owner: torch.Tensor, seg: torch.Tensor):
        """The ``[1, 1, q, past + q]`` mask for new tokens of runs ``owner``, segments ``seg``
        (``None`` when plain causal attention is exact: one run, one branch that sees all)."""
        q, n = len(owner), len(self.owner)
        if len(self.members) == 1:
            d = self.members[0]
            if len(d.running) == 1 and d.sees_all[d.running[0].seg]:
                return None
            allowed = d.vis[seg][:, torch.cat([self.seg, seg])]
        else:  # one block-diagonal visibility over (run, segment) pairs
            ids = torch.tensor([d.id for d in self.members], device=seg.device)
            ids, order = ids.sort()
            vis = [self.members[i].vis for i in order.tolist()]
            base = torch.tensor([0] + [v.shape[0] for v in vis[:-1]], device=seg.device).cumsum(0)
            gid = lambda own, sg: base[torch.searchsorted(ids, own)] + sg
            allowed = torch.block_diag(*vis)[gid(owner, seg)][:, gid(torch.cat([self.owner, owner]),
                                                                   torch.cat([self.seg, seg]))]
        allowed[:, n:] &= torch.ones(q, q, dtype=torch.bool, device=seg.device).tril_()
        if self.bool_mask:
            return allowed[None, None]
        dtype = self.e.dtype
        return torch.zeros(q, n + q, dtype=dtype, device=seg.device).masked_fill_(~allowed, torch.finfo(dtype).min)[
            None, None]

    def remove(self, d: Decoder, keep_cache: bool = True):
        """Take ``d`` out; returns a cache of its slots (in order) when ``keep_cache``."""
        for i, (other, solo) in enumerate(self.lane):
            if other is d:  # still being fed: drop its own cache
                del self.lane[i]
                return solo.remove(d, keep_cache)
        self.members.remove(d)
        mine = self.owner == d.id
        if bool(mine.all()):  # alone: hand the cache over as it is
            cache = self.cache if keep_cache else None
            self.cache, self.owner, self.seg = new_cache(self.model.config), self.owner[:0], self.seg[:0]
            return cache
        cfg = self.model.config
        with torch.inference_mode():
            cache = select_slots(self.cache, mine.nonzero().squeeze(1), cfg) if keep_cache else None
            rest = (~mine).nonzero().squeeze(1)
            self.cache = select_slots(self.cache, rest, cfg)
        self.owner, self.seg = self.owner[rest], self.seg[rest]
        return cache


def continuous(executor, admit, keep_cache: bool = False):
    """The continuous-batching loop over ``executor``, the one every caller uses.

    Before each step ``admit(executor)`` returns the decoders to join now (an empty list
    when none; ``None`` ends the loop once nothing runs). Yields ``(decoder, item)``: each
    token and lifecycle event a decoder reports (with ``emit``), in order, then the
    finished :class:`Run` (its cache kept when ``keep_cache``)."""
    while True:
        new = admit(executor)
        for d in new or ():
            executor.join(d)
            yield from ((d, item) for item in d.take())
        if not len(executor):
            if new is None:
                return
            continue
        for d in executor.step():
            yield from ((d, item) for item in d.take())
            yield d, d.to_run(executor.remove(d, keep_cache))
        for d in executor.members:
            yield from ((d, item) for item in d.take())


def decode_alone(d: Decoder, executor):
    """Drive one decoder to its end on ``executor``, yielding its token and lifecycle
    events; returns its :class:`Run` (with its cache)."""
    queue = [d]
    admit = lambda ex: [queue.pop()] if queue else None
    for _, item in continuous(executor, admit, keep_cache=True):
        if isinstance(item, Run):
            return item
        yield item


def decode_many(engine, make, n: int, batch_size: int, keep_cache: bool = False):
    """Continuous batching: decode the runs ``make(i)`` for ``i in range(n)``, at most
    ``batch_size`` at a time, a new one joining as soon as one finishes; yields ``(i, run)``
    as runs finish. When ``make(i)`` raises, ``(i, exception)`` is yielded and the rest go on."""
    index, todo, failed = {}, iter(range(n)), []

    def admit(executor):
        new = []
        while len(executor) + len(new) < batch_size and (i := next(todo, None)) is not None:
            try:
                d = make(i)
            except Exception as exc:  # noqa: BLE001 - one bad question must not end the others
                failed.append((i, exc))
                continue
            index[d.id] = i
            new.append(d)
        return new or None  # None: every question is in (or failed)

    for d, item in continuous(engine.executor(), admit, keep_cache):
        while failed:
            yield failed.pop(0)
        if isinstance(item, Run):
            yield index.pop(d.id), item
    yield from failed
