"""MaskInspector's Python side: masks and positions as bytes, modes and diffs, and the
explanation of every cell, which must agree with the mask it explains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import medverse_lab as ml
from medverse_lab.widgets._shared import int32_bytes, pack_bits, unpack_bits
from medverse_lab.widgets.mask_inspector import MaskInspector, explain

# 1 and 2 are roots, 3 joins them, 4 hangs off 1, 5 off 3: chunks [1, 2], [3, 4], [5]
PLAN = ml.Plan([ml.Step("1", "a"), ml.Step("2", "b"), ml.Step("3", "c", ["1", "2"]), ml.Step("4", "d", ["1"]),
                ml.Step("5", "e", ["3"])])


@pytest.fixture
def layout():
    return ml.Layout.from_plan(PLAN, prefix_len=4, step_lens={"1": 3, "2": 4, "3": 2, "4": 3, "5": 3},
                               conclusion_len=3, separator_lens=1)


def test_bits_are_packed_like_numpy_packbits():
    mask = torch.rand(13, 11) > 0.5
    assert pack_bits(mask) == np.packbits(mask.numpy()).tobytes()
    assert torch.equal(unpack_bits(pack_bits(mask), (13, 11)), mask)
    assert pack_bits(torch.zeros(0, dtype=torch.bool)) == b""


def test_positions_are_little_endian_int32():
    assert int32_bytes(torch.tensor([1, -2, 70000])) == np.array([1, -2, 70000], dtype="<i4").tobytes()
    with pytest.raises(ValueError):
        int32_bytes(torch.tensor([2**40]))


@pytest.mark.parametrize("mode", ml.MODES)
def test_the_view_gets_the_mode_mask_and_positions_as_bytes(layout, mode):
    w = MaskInspector(layout, mode=mode)
    layout = layout.for_mode(mode)  # request shows the request layout
    assert w.T == layout.T and [s["stop"] for s in w.segments] == [s.stop for s in layout.segments]
    assert isinstance(w.mask, bytes) and isinstance(w.positions, bytes)
    assert torch.equal(unpack_bits(w.mask, (layout.T, layout.T)), ml.attention_mask(layout, mode))
    got = np.frombuffer(w.positions, dtype="<i4")
    assert got.tolist() == ml.position_ids(layout, mode).tolist()


def test_changing_mode_resends_the_mask(layout):
    w = MaskInspector(layout)
    dag = w.mask
    w.mode = "speculative"
    assert w.mask != dag
    assert torch.equal(unpack_bits(w.mask, (layout.T, layout.T)), ml.attention_mask(layout, "speculative"))


def test_a_bad_mode_from_the_view_is_refused(layout):
    w = MaskInspector(layout, mode="layered")
    w.mode = "causal"
    assert w.mode == "layered" and "unknown mode" in w.notice
    with pytest.raises(ValueError):
        MaskInspector(layout, mode="causal")


def test_diff_marks_exactly_the_cells_that_differ(layout):
    w = MaskInspector(layout, mode="layered", diff="medverse-sft")
    differ = ml.mask_diff(layout, "layered", "medverse-sft") != 0
    assert differ.any()
    assert torch.equal(unpack_bits(w.diff, (layout.T, layout.T)), differ)
    assert w.diff_count == int(differ.sum())
    assert np.frombuffer(w.diff_positions, dtype="<i4").tolist() == ml.position_ids(layout, "medverse-sft").tolist()
    w.diff_mode = ""
    assert w.diff == b"" and w.diff_count == 0


def test_segments_and_token_texts_from_a_layout_with_a_tokenizer(tokenizer, example_text):
    trace = ml.parse_trace(example_text)
    layout = ml.Layout.from_trace(trace, tokenizer)
    w = MaskInspector(layout, tokenizer=tokenizer)
    assert [s["branch"] for s in w.segments] == layout.branches
    assert len(w.tokens) == layout.T
    assert "".join(w.tokens) == tokenizer.decode(list(layout.token_ids), skip_special_tokens=False,
                                                 clean_up_tokenization_spaces=False)
    assert MaskInspector(layout).tokens == []


def test_request_mode_shows_the_request_layout_and_names_repeats(layout, tokenizer, example_text):
    trace = ml.parse_trace(example_text)
    real = ml.Layout.from_trace(trace, tokenizer)
    w = MaskInspector(real, tokenizer=tokenizer, diff="layered")
    w.mode = "request"
    req = real.for_requests()
    assert w.T == req.T and w.token_layout.expanded
    assert w.diff_mode == "" and "different layouts" in w.notice  # no cell-by-cell diff across layouts
    five = next(s for s in w.segments if s["branch"] == "5")
    assert [r["step"] for r in five["repeats"]] == ["1", "2", "3", "4"]
    assert "".join(w.tokens) == tokenizer.decode(list(req.token_ids), skip_special_tokens=False,
                                                 clean_up_tokenization_spaces=False)
    r = five["repeats"][0]
    e = w.explain(five["stop"] - 1, r["start"])
    assert e["allowed"] and e["reason"] == "request-repeat" and "step 1's block repeated in step 5" in e["text"]
    assert e["q_position"] < req.T  # counted on from the prefix, not from the repeated layout's index
    w.mode = "dag"
    assert w.T == real.T and w.tokens[0] == tokenizer.decode([real.token_ids[0]])
    # asked of another mode than the one shown, each answer reads that mode's own layout
    mask = ml.attention_mask(req, "request")
    q, k = five["stop"] - 1, r["start"]
    assert w.allowed(q, k, mode="request") == bool(mask[q, k]) and w.allowed(q, k, mode="request")
    assert w.explain(q, k, mode="request")["reason"] == "request-repeat"


def reason(layout, q_branch, k_branch, mode, q_off=0, k_off=0):
    q = layout.segment(q_branch).start + q_off
    k = layout.segment(k_branch).start + k_off
    return explain(layout, q, k, mode)


def test_reasons_name_the_rule(layout):
    assert reason(layout, "1", "conclusion", "dag")["reason"] == "causal-future"
    assert reason(layout, "3", "prefix", "speculative")["reason"] == "prefix"
    assert reason(layout, "conclusion", "4", "dag")["reason"] == "conclusion"
    assert reason(layout, "2", "2", "dag", q_off=2)["reason"] == "same-segment"
    e = reason(layout, "5", "1", "dag")
    assert e["reason"] == "dag-ancestor" and e["allowed"] and "1 -> 3 -> 5" in e["text"]
    e = reason(layout, "4", "2", "dag")
    assert e["reason"] == "not-ancestor" and not e["allowed"]
    assert reason(layout, "2", "1", "layered")["reason"] == "chunk-sibling"
    assert reason(layout, "4", "2", "layered")["reason"] == "earlier-chunk"
    assert reason(layout, "3", "1", "speculative")["reason"] == "speculative-isolation"
    assert reason(layout, "3", "1", "sequential")["reason"] == "causal"


def test_a_click_from_the_view_sets_the_explanation_with_the_diff_mode(layout):
    w = MaskInspector(layout, mode="dag", diff="layered")
    q, k = layout.segment("4").start, layout.segment("2").start
    w._on_frontend_msg(w, {"type": "explain", "q": q, "k": k}, [])
    e = w.explanation
    assert (e["q"], e["k"], e["allowed"], e["reason"]) == (q, k, False, "not-ancestor")
    assert e["other"]["mode"] == "layered" and e["other"]["allowed"]
    assert e["q_position"] == int(ml.position_ids(layout, "dag")[q])
    w._on_frontend_msg(w, {"type": "explain", "q": 10_000, "k": 0}, [])
    assert "outside the layout" in w.notice
    w.mode = "sequential"
    assert w.explanation == {}


def test_allowed_reads_the_packed_mask(layout):
    w = MaskInspector(layout, mode="medverse-sft")
    mask = ml.attention_mask(layout, "medverse-sft")
    assert all(w.allowed(q, k) == bool(mask[q, k]) for q in range(layout.T) for k in range(layout.T))


def test_a_4096_token_mask_is_two_megabytes_of_bits():
    steps = [ml.Step(str(i + 1), "s", [str(i)] if i % 4 else []) for i in range(64)]
    big = ml.Layout.from_plan(ml.Plan(steps), prefix_len=96, step_lens=62, conclusion_len=32)
    assert big.T == 4096
    w = MaskInspector(big, diff="sequential")
    assert len(w.mask) == len(w.diff) == 4096 * 4096 // 8
    assert len(w.positions) == 4096 * 4
    assert w.explain(4000, 3820)["reason"] == "dag-ancestor"  # step 61 -> 62 -> 63
    assert w.explain(4000, 100)["reason"] == "not-ancestor"


def test_takes_a_run(layout):
    class FakeRun:  # what MaskInspector reads from a Run
        mode = "layered"
        tokens = __import__("polars").DataFrame({"text": [f"t{i}" for i in range(layout.T)]})

    run = FakeRun()
    run.layout = layout
    w = MaskInspector(run)
    assert w.mode == w.run_mode == "layered" and w.tokens[3] == "t3"
    with pytest.raises(TypeError):
        MaskInspector("not a layout")
