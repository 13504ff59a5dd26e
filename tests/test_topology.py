"""Masks and positions of every mode: worked examples, invariants, and the public
collator reproduced on tokenized text."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import medverse_lab as ml

from strategies import layouts, plans, trace_texts

# Worked example. Plan: 1 and 2 are roots, 3 depends on 1.
# Layout: prefix 2 tokens, step 1: 2, step 2: 3, step 3: 2, conclusion 2 (T = 11).
#   index    0 1 | 2 3 | 4 5 6 | 7 8 | 9 10
#   segment  P P | 1 1 | 2 2 2 | 3 3 | C C
PLAN = ml.Plan([ml.Step(1, "a"), ml.Step(2, "b"), ml.Step(3, "c", [1])])
LAYOUT = ml.Layout.from_plan(PLAN, prefix_len=2, step_lens={"1": 2, "2": 3, "3": 2}, conclusion_len=2)
P, S1, S2, S3, C = [0, 1], [2, 3], [4, 5, 6], [7, 8], [9, 10]


def visible(mode, q):
    return torch.nonzero(ml.attention_mask(LAYOUT, mode)[q]).flatten().tolist()


def test_dag_worked_example():
    # step 3 starts where its only parent ends (2 + 2 = 4); the conclusion at the latest end (4 + 2 = 6)
    assert ml.position_ids(LAYOUT, "dag").tolist() == [0, 1, 2, 3, 2, 3, 4, 4, 5, 6, 7]
    assert visible("dag", 4) == P + [4]               # step 2 does not see its sibling step 1
    assert visible("dag", 8) == P + S1 + S3           # step 3 sees its parent, not step 2
    assert visible("dag", 10) == list(range(11))      # the conclusion sees everything


def test_layered_worked_example():
    # chunks [1, 2] and [3]: the second chunk's base is 2 + longest of the first (3) = 5
    assert PLAN.chunks() == [["1", "2"], ["3"]]
    assert ml.position_ids(LAYOUT, "layered").tolist() == [0, 1, 2, 3, 2, 3, 4, 5, 6, 7, 8]
    assert visible("layered", 6) == P + S2            # siblings in a chunk are hidden
    assert visible("layered", 8) == P + S1 + S2 + S3  # an earlier chunk is visible whole


def test_speculative_worked_example():
    # every step starts at the prefix end; the conclusion after the longest step (2 + 3 = 5)
    assert ml.position_ids(LAYOUT, "speculative").tolist() == [0, 1, 2, 3, 2, 3, 4, 2, 3, 5, 6]
    assert visible("speculative", 8) == P + S3        # even its parent is hidden
    assert visible("speculative", 9) == P + S1 + S2 + S3 + [9]


def test_sequential_worked_example():
    assert ml.position_ids(LAYOUT, "sequential").tolist() == list(range(11))
    assert torch.equal(ml.attention_mask(LAYOUT, "sequential"), torch.ones(11, 11, dtype=torch.bool).tril())


def test_medverse_sft_shifts_a_chunk_twice():
    # Public collator, blocks [2,4) [4,7) [7,9); base starts at 2 (first <Step>).
    # chunk [1, 2]: longest 3. Block 1 moves by 2-2 = 0, block 2 by 2-4 = -2 -> both start at 2.
    #   Tail from raw end 7 moves by 2+3-7 = -2: step 3 now at 5,6, conclusion at 7,8. base = 5.
    # chunk [3]: block 3 moves by base - raw start = 5-7 = -2 *again* -> 3,4 (layered says 5,6).
    #   Tail from raw end 9 moves by 5+2-9 = -2: conclusion at 5,6 (layered says 7,8).
    assert ml.position_ids(LAYOUT, "medverse-sft").tolist() == [0, 1, 2, 3, 2, 3, 4, 3, 4, 5, 6]
    # without separators its mask is the layered mask
    assert torch.equal(ml.attention_mask(LAYOUT, "medverse-sft"), ml.attention_mask(LAYOUT, "layered"))


def test_medverse_sft_lets_a_step_read_its_sibling_through_the_separator():
    layout = ml.Layout.from_plan(PLAN, 2, {"1": 3, "2": 3, "3": 2}, 2, separator_lens={"1": 1, "2": 0, "3": 0})
    # step 1 = <Step> x </Step> at 2,3 then separator 4; step 2 at 5..7
    mask = ml.attention_mask(layout, "medverse-sft")
    assert not mask[5, 2] and not mask[5, 3]  # the sibling block is hidden ...
    assert mask[5, 4]                          # ... but its separator, which saw it, is not
    assert not ml.attention_mask(layout, "layered")[5, 4]
    # and explain says which rule: the separator is readable, the sibling's own block is not
    e = ml.explain(layout, 5, 4, "medverse-sft")
    assert e["allowed"] and e["reason"] == "separator" and "sibling" in e["text"]
    e = ml.explain(layout, 5, 2, "medverse-sft")
    assert not e["allowed"] and e["reason"] == "chunk-sibling"


@settings(max_examples=150, deadline=None)
@given(layouts())
def test_speculative_within_dag_within_layered_within_sequential(layout):
    spec, dag, lay, seq = (ml.attention_mask(layout, m) for m in ("speculative", "dag", "layered", "sequential"))
    assert not (spec & ~dag).any()
    assert not (dag & ~lay).any()
    assert not (lay & ~seq).any()
    assert torch.equal(seq, torch.ones(layout.T, layout.T, dtype=torch.bool).tril())


@settings(max_examples=150, deadline=None)
@given(layouts(), st.sampled_from(ml.ENGINE_MODES))
def test_every_key_a_token_sees_sits_at_an_earlier_position(layout, mode):
    layout = layout.for_mode(mode)
    mask, pos = ml.attention_mask(layout, mode), ml.position_ids(layout, mode)
    for q in range(layout.T):
        keys = torch.nonzero(mask[q]).flatten()
        assert mask[q, q]
        assert (pos[keys[keys != q]] < pos[q]).all()


@settings(max_examples=150, deadline=None)
@given(layouts())
def test_dag_rule_by_segments(layout):
    mask, pos = ml.attention_mask(layout, "dag"), ml.position_ids(layout, "dag")
    plan = layout.plan
    end = {}
    for s in plan.steps:
        seg = layout.segment(s.id)
        start = max((end[d] for d in s.deps), default=layout.prefix_len)
        assert pos[seg.start:seg.stop].tolist() == list(range(start, start + len(seg)))
        end[s.id] = start + len(seg)
        for t in plan.ids:
            other = layout.segment(t)
            sees = bool(mask[seg.stop - 1, other.start:other.stop].any())
            assert sees == (t == s.id or t in plan.ancestors(s.id))
    concl = layout.segment("conclusion")
    if len(concl):
        assert int(pos[concl.start]) == max(end.values())


# ----- medverse-sft against the public collator's rule, on tokenized text -------------

def reference_collator(ids: list[int], tok):
    """DESIGN §3's medverse-sft over raw token ids, reading dependencies as the public
    collator does: inside <Outline> tags only, after the word 'Dependency'."""
    tags = ml.tag_ids(tok)
    deps, blocks, start = {}, [], None
    for i, t in enumerate(ids):
        if t == tags["<Outline>"]:
            start = i
        elif t == tags["</Outline>"]:
            text = tok.decode(ids[start + 1:i])
            sid = re.search(r"Transient\s+Step\s+(\d+)", text, re.I)
            found = re.search(r"Dependency\s*:\s*\[([0-9,\s]*)\]", text, re.I)
            if sid:
                deps[sid.group(1)] = {d.strip() for d in (found.group(1).split(",") if found else []) if d.strip()}
        elif t == tags["<Step>"]:
            start = i
        elif t == tags["</Step>"]:
            header = tok.decode(ids[start + 1:i]).split(":")[0]
            blocks.append((start, i + 1, header.split()[-1]))
    chunks, current = [], []
    for block in blocks:
        if current and deps.get(block[2], set()) & {b[2] for b in current}:
            chunks.append(current)
            current = []
        current.append(block)
    chunks.append(current)
    T = len(ids)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for chunk in chunks:
        for a in chunk:
            for b in chunk:
                if a != b:
                    mask[a[0]:a[1], b[0]:b[1]] = False
    pos = list(range(T))
    base = blocks[0][0]
    for chunk in chunks:
        longest = max(b - a for a, b, _ in chunk)
        for a, b, _ in chunk:
            for i in range(a, b):
                pos[i] += base - a
        raw_end = chunk[-1][1]
        for i in range(raw_end, T):
            pos[i] += base + longest - raw_end
        base += longest
    return mask, pos


@pytest.mark.parametrize("separator", ["\n", ""])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=trace_texts())
def test_medverse_sft_matches_the_collator_on_tokenized_text(tokenizer, separator, case):
    text, plan = case
    text = re.sub(r"</Step>[ \n]*", "</Step>" + separator, text)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    layout = ml.Layout.from_token_ids(ids, tokenizer)
    assert set(layout.separator_lens.values()) == ({0} if not separator else {1})
    mask, pos = reference_collator(ids, tokenizer)
    assert torch.equal(ml.attention_mask(layout, "medverse-sft"), mask)
    assert ml.position_ids(layout, "medverse-sft").tolist() == pos


@settings(max_examples=100, deadline=None)
@given(plans())
def test_double_shift_appears_exactly_after_a_multi_step_chunk(plan):
    layout = ml.Layout.from_plan(plan, 3, {sid: 2 for sid in plan.ids}, 2)
    sft, layered = ml.position_ids(layout, "medverse-sft"), ml.position_ids(layout, "layered")
    chunks = plan.chunks()
    first_multi = next((i for i, c in enumerate(chunks) if len(c) > 1), None)
    differs = not torch.equal(sft, layered)
    # a later chunk's blocks move from their raw index with the earlier tail move still in
    assert differs == (first_multi is not None and first_multi < len(chunks) - 1)


# ----- layouts from tokens ----------------------------------------------------------------

def test_layout_from_token_ids_cuts_at_the_step_tags(tokenizer, example_text):
    trace = ml.parse_trace(example_text)
    layout = ml.Layout.from_trace(trace, tokenizer)
    ids = list(layout.token_ids)
    assert tokenizer.decode(ids) == example_text
    for (branch, text), seg in zip(trace.segments(), layout.segments):
        assert seg.branch == branch
        assert tokenizer.decode(ids[seg.start:seg.stop]) == text
    for sid in trace.plan.ids:
        assert ids[layout.close_index(sid)] == ml.tag_ids(tokenizer)["</Step>"]


# ----- errors -------------------------------------------------------------------------------

def test_bad_mode_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown mode 'tree'; valid modes are dag, layered, speculative, "
                                         "sequential, request, medverse-sft"):
        ml.attention_mask(LAYOUT, "tree")
    with pytest.raises(ValueError, match="valid modes are"):
        ml.position_ids(LAYOUT, "DAG")


def test_step_lens_must_name_every_step_and_no_other():
    with pytest.raises(ml.LayoutError, match=r"step_lens misses step 3; the plan's steps are \['1', '2', '3'\]"):
        ml.Layout.from_plan(PLAN, 2, {"1": 2, "2": 2})
    with pytest.raises(ml.LayoutError, match="names step 9 not in the plan"):
        ml.Layout.from_plan(PLAN, 2, {"1": 2, "2": 2, "3": 2, "9": 1})
    with pytest.raises(ml.LayoutError, match=r"step_lens\['2'\] = 0: must be an integer >= 1"):
        ml.Layout.from_plan(PLAN, 2, {"1": 2, "2": 0, "3": 2})
    with pytest.raises(ml.PlanError):
        ml.Layout.from_plan(ml.Plan([ml.Step(1, "a", [2])]), 2, {"1": 2})


def test_unmatched_step_tags_name_the_token_index(tokenizer, example_text):
    ids = tokenizer(example_text, add_special_tokens=False)["input_ids"]
    tags = ml.tag_ids(tokenizer)
    closes = [i for i, t in enumerate(ids) if t == tags["</Step>"]]
    opens = [i for i, t in enumerate(ids) if t == tags["<Step>"]]
    broken = ids[:closes[1]] + ids[closes[1] + 1:]  # drop step 2's </Step>
    with pytest.raises(ml.LayoutError, match=f"<Step> at token index {opens[1]} is not closed before "
                                             f"the <Step> at {opens[2] - 1}"):
        ml.Layout.from_token_ids(broken, tokenizer)
    stray = ids[:opens[0]] + ids[opens[0] + 1:]
    with pytest.raises(ml.LayoutError, match=f"</Step> at token index {closes[0] - 1} has no matching <Step>"):
        ml.Layout.from_token_ids(stray, tokenizer)


def test_tokenizer_without_tags_is_explained():
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    plain = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()))
    with pytest.raises(ValueError, match=r"no single token for <Think>.*add_medverse_tokens"):
        ml.Layout.from_token_ids([1, 2], plain)


def test_layout_inputs_are_checked():
    with pytest.raises(ml.LayoutError, match="must map step ids to lengths"):
        ml.Layout.from_plan(PLAN, 2, [2, 2, 2])
    with pytest.raises(ml.LayoutError, match="must be an integer >= 1"):
        ml.Layout.from_plan(PLAN, 2, {"1": True, "2": 2, "3": 2})
    with pytest.raises(TypeError, match="expected an ml.Layout or a Run, got Plan"):
        ml.attention_mask(PLAN)
