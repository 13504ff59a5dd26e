"""The decode loop: every branch of a run in one key/value cache.

Each forward call feeds one token per active branch, all batched into one query of q tokens
with a 4-D additive mask ``[1, 1, q, past + q]`` and ``position_ids [1, q]``. Visibility is
the segment rule of :func:`medverse_lab.segment_visibility` (the one training uses), kept
as one float row per segment over the cache slots: appending a slot writes one column,
building the mask is one row gather. Positions come from
:func:`medverse_lab.segment_starts`, asked each time a step finishes.

A branch feeds its forced tokens (``<Step>`` and the header) first, then samples until its
close tag (or a limit, or a stray tag, when the close tag is forced), then feeds the forced
tail (the separator) and is done. Finishing a branch may start others: the plan starts
Phase II, a step may enable its children, the last step starts the conclusion.
"""

from __future__ import annotations

import time
from collections import deque

import torch

from ..errors import PlanError
from ..plan import Plan, Step, _parse_outline
from ..topology import segment_starts, segment_visibility
from .run import Slots, TokenEvent
from .sampling import sample

#: description of the single step run when a model-written plan has no usable step
FALLBACK_STEP = "reason about the question step by step"


def salvage_plan(text: str) -> Plan:
    """A valid plan a ``sequential`` run can execute, kept from an outline that failed
    validation: the steps that parse, in increasing number order, with only their backward
    dependencies; one generic step when nothing survives."""
    kept: list[Step] = []
    for s in _parse_outline(text)[0]:
        if s.id.isdigit() and int(s.id) >= 1 and (not kept or int(s.id) > int(kept[-1].id)):
            kept.append(Step(s.id, s.description, [d for d in s.deps if d in {k.id for k in kept}]))
    return Plan(kept or [Step("1", FALLBACK_STEP)]).validate()


class Branch:
    """One growing segment: the plan (inside the prefix), a step, or the conclusion."""

    __slots__ = ("name", "kind", "seg", "pos", "offset", "next_id", "next_forced", "queue", "close_id", "tail",
                 "limit", "stray", "n_sampled", "closing", "done", "span")

    def __init__(self, name, kind, seg, pos, offset, forced, close_id, tail, limit, stray, body=None):
        self.name, self.kind, self.seg, self.pos, self.offset = name, kind, seg, pos, offset
        self.queue = deque(forced)
        self.next_id, self.next_forced = self.queue.popleft(), True
        self.close_id, self.tail, self.limit, self.stray = close_id, tail, limit, stray
        self.n_sampled, self.done = 0, False
        start = offset + len(forced)  # first body token, as an offset within the segment
        self.span = [start, None]
        self.closing = body is not None
        if body is not None:  # forced body text: the whole block is known
            self.queue.extend([*body, close_id, *tail])
            self.span[1] = start + len(body)


class Decoder:
    """State of one run (or rerun) while it decodes. Build with :meth:`Engine._decoder`."""

    def __init__(self, engine, *, cache, slots: Slots, generator, temperature, top_p, limits, emit, t0, call0=0):
        self.e, self.model, self.cache = engine, engine.model, cache
        self.slots, self.slot_seg = slots, []
        self.gen, self.temperature, self.top_p = generator, temperature, top_p
        self.max_plan, self.max_step, self.max_conclusion = limits
        self.emit, self.t0, self.calls = emit, t0, call0
        self.events: list[dict] = []
        self.running: list[Branch] = []
        self.new: list[Branch] = []
        self.plan: Plan | None = None
        self.rows = None  # [S+2, capacity] additive mask rows, one per segment (Phase II)
        self.spans: dict[str, tuple[int, int]] = {}
        self.marks = {"start": 0.0}
        self.forced_bodies: dict[str, list[int]] = {}

    # ----- the hot path -------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> list[TokenEvent]:
        """One forward call: feed each running branch's next token, sample, advance."""
        run, dev, n = self.running, self.e.device, len(self.slots)
        q = len(run)
        ids = torch.tensor([[b.next_id for b in run]], device=dev)
        pos = torch.tensor([[b.pos for b in run]], device=dev)
        mask = self.mask([b.seg for b in run], n, q)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                         **{self.e.cache_kw: self.cache})
        nxt = sample(out.logits[0], self.temperature, self.top_p, self.gen).tolist()
        t, call = time.perf_counter() - self.t0, self.calls
        self.calls += 1
        fed = []
        for b, tok in zip(run, nxt):
            self.slots.append(b.name, b.offset, b.pos, b.next_id, b.next_forced, call, t)
            self.slot_seg.append(b.seg)
            if self.emit:
                fed.append(TokenEvent(b.name, self.e.piece(b.next_id), b.pos, t, b.next_id, n, b.next_forced, call))
            n += 1
            b.offset += 1
            b.pos += 1
            self.advance(b, tok)
        self.running = [b for b in run if not b.done] + self.new
        self.new = []
        return fed

    def mask(self, segs: list[int], n: int, q: int):
        """The 4-D additive mask for q new tokens of segments ``segs`` over n cached slots
        (``None`` where every new token may see every slot: plain causal is then exact)."""
        if self.rows is None:
            return None
        if n + q > self.rows.shape[1]:
            grown = self.rows.new_empty(self.rows.shape[0], 2 * (n + q))
            grown[:, :n] = self.rows[:, :n]
            self.rows = grown
        # transformers 5 hands a 4-D mask to attention untouched (masking_utils returns it as
        # is), and eager *adds* it to the scores: so additive float, exactly [q, past + q]
        seg = torch.tensor(segs, device=self.rows.device)
        self.rows[:, n:n + q] = self.visadd[:, seg]  # the new slots' columns, for every segment
        if q == 1 and self.sees_all[segs[0]]:
            return None
        return self.rows[seg, :n + q][None, None]

    def advance(self, b: Branch, tok: int) -> None:
        """Choose the token ``b`` feeds next: forced, sampled ``tok``, or a forced close."""
        if b.queue:
            b.next_id, b.next_forced = b.queue.popleft(), True
        elif b.closing:
            b.done = True
            self.finish(b)
        elif tok == b.close_id:
            b.next_id, b.next_forced, b.closing = tok, False, True
            b.span[1] = b.offset
            b.queue.extend(b.tail)
        elif b.n_sampled >= b.limit or tok in b.stray:
            reason = "limit" if b.n_sampled >= b.limit else "stray-token"
            self.events.append({"kind": "forced-close", "branch": b.name, "reason": reason,
                                "token": self.e.piece(tok), "limit": b.limit, "forward_call": self.calls - 1})
            b.next_id, b.next_forced, b.closing = b.close_id, True, True
            b.span[1] = b.offset
            b.queue.extend(b.tail)
        else:
            b.next_id, b.next_forced = tok, False
            b.n_sampled += 1

    # ----- phases ------------------------------------------------------------------------
    def prefill(self, ids: list[int]) -> None:
        """Encode the known prefix in one forward (its tokens are all visible to each other)."""
        with torch.inference_mode():
            x = torch.tensor([ids], device=self.e.device)
            self.model(input_ids=x, position_ids=torch.arange(len(ids), device=self.e.device)[None],
                       use_cache=True, **{self.e.cache_kw: self.cache})
        t, call = time.perf_counter() - self.t0, self.calls
        self.calls += 1
        for i, tok in enumerate(ids):
            self.slots.append("prefix", i, i, tok, True, call, t)  # given, not sampled
            self.slot_seg.append(0)
        self.marks["prefill"] = t

    def start_plan(self) -> None:
        """Phase I: the model writes the plan after a forced ``<Plan>``."""
        e, n = self.e, len(self.slots)
        self.events.append({"kind": "phase", "phase": "plan", "time_s": time.perf_counter() - self.t0})
        self.running.append(Branch("prefix", "plan", 0, n, n, [e.tags["<Plan>"]], e.tags["</Plan>"], e.exec_line,
                                   self.max_plan, e.plan_stray))

    def finish(self, b: Branch) -> None:
        self.spans[b.name if b.kind != "plan" else "plan"] = tuple(b.span)
        t = time.perf_counter() - self.t0
        if b.kind == "plan":
            self.marks["plan"] = t
            a, z = b.span
            text = self.e.decode(self.slots.token[a:z])
            self.prefix_len = b.offset
            self.start_steps(*self.read_plan(text))
        elif b.kind == "step":
            self.lens[b.name] = b.offset
            self.done.add(b.name)
            self.events.append({"kind": "step-end", "branch": b.name, "tokens": b.offset, "time_s": t,
                                "forward_call": self.calls - 1})
            self.schedule()
        else:
            self.marks["conclusion"] = t

    def read_plan(self, text: str) -> tuple[Plan, str]:
        """The model's plan, or (plan error) a salvaged plan run ``sequential``."""
        try:
            return Plan.from_outline(text).validate(), self.requested_mode
        except PlanError as err:
            plan = salvage_plan(text)
            self.events.append({"kind": "plan-error", "error": err, "requested_mode": self.requested_mode,
                                "fallback": "sequential", "plan": plan, "plan_text": text})
            return plan, "sequential"

    def start_steps(self, plan: Plan, mode: str, done=(), lens=None) -> None:
        """Phase II: visibility rows for the plan, then the first steps of the schedule."""
        self.plan, self.mode = plan, mode
        self.seg = {sid: i + 1 for i, sid in enumerate(plan.ids)}
        self.seg["prefix"], self.seg["conclusion"] = 0, len(plan) + 1
        vis = segment_visibility(plan, mode).to(self.e.device)
        self.visadd = torch.zeros(vis.shape, dtype=self.e.dtype, device=self.e.device).masked_fill_(
            ~vis, torch.finfo(self.e.dtype).min)
        self.sees_all = vis.all(1).tolist()
        n = len(self.slots)
        with torch.inference_mode():
            self.rows = torch.empty(len(plan) + 2, max(2 * n, 256), dtype=self.e.dtype, device=self.e.device)
            self.rows[:, :n] = self.visadd[:, torch.tensor(self.slot_seg, dtype=torch.long, device=self.e.device)]
        self.done, self.lens = set(done), dict(lens or {})
        self.started, self.conclusion_started = set(done), False
        self.events.append({"kind": "phase", "phase": "steps", "mode": mode, "time_s": time.perf_counter() - self.t0})
        self.schedule()

    def startable(self) -> list[str]:
        """Steps the scheduler of ``self.mode`` starts now."""
        plan, done, started = self.plan, self.done, self.started
        todo = [sid for sid in plan.ids if sid not in started]
        if self.mode == "dag":  # Petri net: enabled the moment every input place is marked
            return [s.id for s in plan.steps if s.id not in started and all(d in done for d in s.deps)]
        if self.mode == "speculative":
            return todo
        if self.mode == "layered":  # chunk by chunk
            chunk = next((c for c in plan.chunks() if not all(s in done for s in c)), [])
            return [s for s in chunk if s not in started]
        return todo[:1] if started == done else []  # sequential: one at a time

    def schedule(self) -> None:
        e, plan = self.e, self.plan
        ready = self.startable()
        if ready:
            starts = segment_starts(plan, self.prefix_len, self.lens, self.mode)
            for sid in ready:
                step = plan[sid]
                forced = [e.tags["<Step>"], *e.encode(f" {step.header()}\n")]
                self.new.append(Branch(sid, "step", self.seg[sid], starts[sid], 0, forced, e.tags["</Step>"],
                                       e.separator, self.max_step, e.step_stray, self.forced_bodies.get(sid)))
                self.started.add(sid)
                self.events.append({"kind": "step-start", "branch": sid, "position": starts[sid],
                                    "time_s": time.perf_counter() - self.t0, "forward_call": self.calls})
        if len(self.done) == len(plan) and not self.conclusion_started:
            self.conclusion_started = True
            t = time.perf_counter() - self.t0
            self.marks["steps"] = t
            self.events.append({"kind": "phase", "phase": "conclusion", "time_s": t})
            start = segment_starts(plan, self.prefix_len, self.lens, self.mode)["conclusion"]
            self.new.append(Branch("conclusion", "conclusion", self.seg["conclusion"], start, 0, e.conclusion_open,
                                   e.tags["</Conclusion>"], e.conclusion_tail, self.max_conclusion, e.conclusion_stray))

    def loop(self):
        """Run until no branch is left, yielding token events when ``emit``."""
        self.running += self.new
        self.new = []
        while self.running:
            fed = self.step()
            if fed:
                yield from fed
        self.marks["end"] = time.perf_counter() - self.t0
