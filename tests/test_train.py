"""Topology-aware training: a few real steps of a tiny model, checkpoints, resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import medverse_lab as ml
from medverse_lab.training.collator import tokenize_record
from medverse_lab.data.records import load_records, write_jsonl
from medverse_lab.training.trainer import TrainConfig, train


def records(n: int, seed: int = 0) -> list[dict]:
    """MedVerse records with random plans (2-4 steps) and short step texts."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.randint(2, 4)
        plan = ml.Plan(ml.Step(j, f"finding {rng.randint(0, 9)} -> sign {j}",
                               [d for d in range(1, j) if rng.random() < 0.4]) for j in range(1, k + 1))
        letter = "ABCD"[i % 4]
        trace = ml.make_trace(plan, {s.id: f"sign {s.id} holds.\n" for s in plan.steps}, f"\nAnswer: {letter}\n")
        out.append({"id": str(i), "messages": [
            {"role": "system", "content": "You are a doctor."},
            {"role": "user", "content": f"Question {i}: which letter? pick {letter}"},
            {"role": "assistant", "content": trace.to_text()}]})
    return out


def records_file(tmp_path_factory, n: int) -> Path:
    """``n`` records (seed 0) as a JSONL file in a fresh folder."""
    return write_jsonl(records(n), tmp_path_factory.mktemp("data") / "train.jsonl")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return records_file(tmp_path_factory, 64)


def tiny(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), vocab_size=300, hidden_size=32, num_layers=2, num_heads=4,
                num_kv_heads=2, intermediate_size=64, steps=24, batch_size=4, eval_every=8, save_every=12,
                lr=1e-2, warmup=4)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("mode", ["dag", "medverse-sft"])
def test_loss_goes_down_and_the_checkpoint_records_the_mode(data, tmp_path, mode):
    result = train(tiny(data, tmp_path / "run", mode=mode), progress=False)
    evals = [h["eval_loss"] for h in result["history"] if "eval_loss" in h]
    assert len(evals) == 3 and evals[-1] < evals[0] - 0.5
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run", use_safetensors=True, dtype=torch.float32)
    assert model.config.medverse_mode == mode
    assert (tmp_path / "run" / "model.safetensors").exists() and (tmp_path / "run" / "tokenizer.json").exists()


def test_resume_continues_where_it_stopped(data, tmp_path):
    full = train(tiny(data, tmp_path / "full", steps=16, save_every=8), progress=False)
    train(tiny(data, tmp_path / "half", steps=16, save_every=8), progress=False, stop_after=8)
    resumed = train(tiny(data, tmp_path / "half", steps=16, save_every=8, resume=True), progress=False)
    assert [h["step"] for h in resumed["history"]] == list(range(1, 17))
    # same batches, same optimizer state: the resumed run retraces the uninterrupted one
    for a, b in zip(full["history"][8:], resumed["history"][8:]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4)


def test_batch_uses_the_library_mask_positions_and_loss_rule(tokenizer):
    recs = records(3, seed=1)
    collator = ml.TopologyCollator(tokenizer, "dag")
    examples = collator.prepare(recs)
    batch = collator(recs)  # the records themselves: prepared once, then found in the cache
    assert all(collator.example(r) is e for r, e in zip(recs, examples))
    L = batch["input_ids"].shape[1]
    for b, (r, e) in enumerate(zip(recs, examples)):
        T = len(e)
        layout = ml.Layout.from_token_ids(e.input_ids, tokenizer)
        loss_from = tokenize_record(r, tokenizer)["loss_from"]
        mask = ml.attention_mask(layout, "dag")
        assert torch.equal(batch["attention_mask"][b, 0, :T, :T] == 0, mask)
        assert torch.equal(batch["position_ids"][b, :T], ml.position_ids(layout, "dag"))
        labels = batch["labels"][b]
        assert (labels[:loss_from] == -100).all()  # no loss on the prompt
        assert (labels[T:] == -100).all() and (batch["attention_mask"][b, 0, T:, :T].amax(-1) < 0).all()
        for seg in layout.segments[2:-1]:  # a step after the first: its <Step> follows a sibling's
            hidden = not mask[seg.start, seg.start - 1]
            assert (labels[seg.start] == -100) == hidden
        assert labels[T - 1] == tokenizer.eos_token_id
    assert L == max(len(e) for e in examples)


def test_bad_config_and_bad_data_are_explained(tmp_path):
    with pytest.raises(ValueError, match="unknown mode 'tree'"):
        TrainConfig(data="x", out="y", mode="tree")
    with pytest.raises(ValueError, match="steps = 0: must be >= 1"):
        TrainConfig(data="x", out="y", steps=0)
    with pytest.raises(ValueError, match="dtype 'fp16' is not one of float32, float16, bfloat16"):
        TrainConfig(data="x", out="y", save_dtype="fp16")
    broken = records(3)
    broken[1]["messages"][2]["content"] = broken[1]["messages"][2]["content"].replace("Dependency: []", "Dependency: [9]", 1)
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in broken))
    with pytest.raises(ValueError, match=r"(?s)record '1' in .*broken.jsonl: .*unknown step 9"):
        train(tiny(path, tmp_path / "out", steps=1), progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n{oops\n')
    with pytest.raises(ValueError, match="bad.jsonl line 2: not JSON"):
        load_records(bad)


def test_examples_longer_than_max_len_are_reported_not_truncated(data, tmp_path):
    with pytest.raises(ValueError, match=r"no example of .*train.jsonl fits max_len=16: the shortest of \d+ is \d+ tokens"):
        train(tiny(data, tmp_path / "out", max_len=16, steps=1), progress=False)
