"""Every engine mode is one rule: positions and scheduling both follow from the segment
visibility. The per-mode rules below are the ones the engine used to spell out case by
case (and DESIGN's table states); the derivation must agree with them on every plan."""

from __future__ import annotations

import random

import pytest
import torch

import medverse_lab as ml
from medverse_lab.topology import ENGINE_MODES, ready_steps, segment_starts


# ----- the rules as the table states them, mode by mode -----------------------------------
def starts_by_table(plan, prefix_len, step_lens, mode):
    starts = {}
    if mode == "sequential":
        at = prefix_len
        for sid in plan.ids:
            starts[sid] = at
            if sid not in step_lens:
                return starts
            at += step_lens[sid]
        starts["conclusion"] = at
    elif mode == "speculative":
        starts.update({sid: prefix_len for sid in plan.ids})
        if all(s in step_lens for s in plan.ids):
            starts["conclusion"] = prefix_len + max((step_lens[s] for s in plan.ids), default=0)
    elif mode == "dag":
        end = {}
        for s in plan.steps:
            if all(d in end for d in s.deps):
                starts[s.id] = max((end[d] for d in s.deps), default=prefix_len)
                if s.id in step_lens:
                    end[s.id] = starts[s.id] + step_lens[s.id]
        if len(end) == len(plan):
            starts["conclusion"] = max(end.values(), default=prefix_len)
    elif mode == "layered":
        base = prefix_len
        for chunk in plan.chunks():
            starts.update({sid: base for sid in chunk})
            if not all(s in step_lens for s in chunk):
                return starts
            base += max(step_lens[s] for s in chunk)
        starts["conclusion"] = base
    elif mode == "request":  # each request counts on from the prefix once what it repeats is known
        starts.update({sid: prefix_len for sid in plan.ids if plan.ancestors(sid) <= set(step_lens)})
        if all(s in step_lens for s in plan.ids):
            starts["conclusion"] = prefix_len
    return starts


def ready_by_table(plan, mode, done, started):
    todo = [sid for sid in plan.ids if sid not in started]
    if mode in ("dag", "request"):  # the Petri net: enabled once every input place is marked
        return [s.id for s in plan.steps if s.id not in started and all(d in done for d in s.deps)]
    if mode == "speculative":
        return todo
    if mode == "layered":  # chunk by chunk
        chunk = next((c for c in plan.chunks() if not all(s in done for s in c)), [])
        return [s for s in chunk if s not in started]
    return todo[:1] if started == done else []  # sequential: one at a time


def random_plan(rng: random.Random) -> ml.Plan:
    n = rng.randint(0, 12)
    return ml.Plan(ml.Step(str(i), f"s{i}", [str(d) for d in rng.sample(range(1, i), rng.randint(0, min(4, i - 1)))])
                   for i in range(1, n + 1))


def reachable_states(plan, mode, rng):
    """(done, started) pairs a scheduler of ``mode`` passes through, finishing started steps
    in a random order."""
    done, started = set(), set()
    yield set(done), set(started)
    while len(done) < len(plan):
        started |= set(ready_by_table(plan, mode, done, started))
        yield set(done), set(started)
        done.add(rng.choice(sorted(started - done)))
        yield set(done), set(started)


PLANS = 2000


@pytest.mark.parametrize("mode", ENGINE_MODES)
def test_starts_follow_from_visibility_on_random_plans(mode):
    rng = random.Random(f"starts-{mode}")
    for _ in range(PLANS):
        plan = random_plan(rng)
        lens = {sid: rng.randint(0, 9) for sid in plan.ids}
        prefix = rng.randint(0, 50)
        known = [dict(lens), {s: n for s, n in lens.items() if rng.random() < 0.5}, {}]
        for step_lens in known:  # complete, any subset, nothing yet
            assert segment_starts(plan, prefix, step_lens, mode) == starts_by_table(plan, prefix, step_lens, mode), \
                (plan.to_outline(tagged=False), step_lens, mode)


@pytest.mark.parametrize("mode", ENGINE_MODES)
def test_scheduling_follows_from_visibility_on_random_plans(mode):
    rng = random.Random(f"ready-{mode}")
    for _ in range(PLANS):
        plan = random_plan(rng)
        for done, started in reachable_states(plan, mode, rng):
            ours = [s for s in ready_steps(plan, mode, done) if s not in started]
            assert ours == ready_by_table(plan, mode, done, started), (plan.to_outline(tagged=False), done, started)


def test_dag_readiness_is_the_petri_net_frontier():
    rng = random.Random(7)
    for _ in range(300):
        plan = random_plan(rng)
        net = ml.PetriNet(plan)
        while not net.is_complete():
            assert sorted(ready_steps(plan, "dag", net.fired), key=int) == sorted(net.frontier(), key=int)
            net.fire(rng.choice(net.frontier()))


@pytest.mark.parametrize("mode", ml.MODES)
def test_explain_reads_the_mask_it_explains(mode):
    rng = random.Random(f"explain-{mode}")
    for _ in range(40):
        plan = random_plan(rng)
        if not len(plan):  # a layout needs a step
            continue
        layout = ml.Layout.from_plan(plan, rng.randint(1, 4), {s: rng.randint(2, 4) for s in plan.ids},
                                     conclusion_len=rng.randint(0, 3), separator_lens=rng.randint(0, 1))
        layout = layout.for_mode(mode)
        mask = ml.attention_mask(layout, mode)
        for q in range(layout.T):
            for k in range(layout.T):
                e = ml.explain(layout, q, k, mode)
                assert e["allowed"] == bool(mask[q, k]), (plan.to_outline(tagged=False), q, k, e)
                assert e["text"]


def test_request_layout_is_one_causal_sequence_per_request():
    """The request rule is what a stock engine runs: each step is prefix + its ancestors'
    blocks (plan order) + its own, the conclusion prefix + every block + its own, each
    plain causal from position 0; nothing else sees anything."""
    rng = random.Random("request")
    for _ in range(500):
        plan = random_plan(rng)
        if not len(plan):  # a layout needs a step
            continue
        prefix = rng.randint(1, 6)
        lens = {s: rng.randint(2, 5) for s in plan.ids}
        plain = ml.Layout.from_plan(plan, prefix, lens, conclusion_len=rng.randint(0, 3),
                                    separator_lens=rng.randint(0, 1))
        plain.token_ids = tuple(range(1000, 1000 + plain.T))  # every plain token told apart
        layout = plain.for_requests()
        mask, pos = ml.attention_mask(layout, "request"), ml.position_ids(layout, "request")
        own = {seg.branch: list(plain.token_ids[seg.start:seg.stop]) for seg in plain.segments}
        expected = torch.zeros(layout.T, layout.T, dtype=torch.bool)
        expected[:prefix, :prefix] = torch.ones(prefix, prefix, dtype=torch.bool).tril()
        for seg in layout.segments[1:]:
            reads = [s for s in plan.ids if s in plan.ancestors(seg.branch)] if seg.branch != "conclusion" else plan.ids
            request = own["prefix"] + [t for s in reads for t in own[s]] + own[seg.branch]
            index = list(range(prefix)) + list(range(seg.start, seg.stop))  # the request's tokens in the layout
            assert [layout.token_ids[i] for i in index] == request
            assert pos[index].tolist() == list(range(len(request)))
            causal = torch.ones(len(index), len(index), dtype=torch.bool).tril()
            expected[torch.tensor(index)[:, None], torch.tensor(index)[None, :]] = causal
        assert torch.equal(mask, expected), plan.to_outline(tagged=False)
        assert layout.base.token_ids == plain.token_ids
