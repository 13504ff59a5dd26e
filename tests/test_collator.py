"""The topology collator: the library's masks and positions in every batch, examples
prepared once, the flex_attention block mask equal to the dense mask, and real training
with transformers' Trainer and TRL's SFTTrainer."""

from __future__ import annotations

import json

import pytest
import torch

import medverse_lab as ml
from medverse_lab.training.collator import allowed_mask, pad_examples, tokenize_record
from medverse_lab.training.block_mask import block_mask, flex_available

from conftest import tiny_model
from test_train import records

needs_flex = pytest.mark.skipif(not flex_available(), reason="this torch has no flex_attention")


def layout_of(example, tokenizer) -> ml.Layout:
    return ml.Layout.from_token_ids(example.input_ids, tokenizer)


@pytest.mark.parametrize("mode", ml.MODES)
def test_one_batch_has_the_library_mask_and_positions(tokenizer, mode):
    recs = records(4, seed=2)
    collator = ml.TopologyCollator(tokenizer, mode)
    batch = collator(recs)
    B, L = batch["input_ids"].shape
    assert batch["attention_mask"].shape == (B, 1, L, L) and batch["attention_mask"].dtype == torch.float32
    for b, rec in enumerate(recs):
        tokens = tokenize_record(rec, tokenizer)
        layout = ml.Layout.from_token_ids(tokens["input_ids"], tokenizer).for_mode(mode)  # request: repeats
        T = layout.T
        assert batch["input_ids"][b, :T].tolist() == list(layout.token_ids)
        assert layout.base.token_ids == tuple(tokens["input_ids"])
        assert torch.equal(batch["attention_mask"][b, 0, :T, :T] == 0, ml.attention_mask(layout, mode))
        assert torch.equal(batch["position_ids"][b, :T], ml.position_ids(layout, mode))
        assert (batch["attention_mask"][b, 0, :T, T:] < 0).all()  # nothing real sees padding
        assert (batch["labels"][b, :tokens["loss_from"]] == -100).all() and (batch["labels"][b, T:] == -100).all()
        assert batch["labels"][b, T - 1] == tokenizer.eos_token_id


def test_request_examples_learn_each_block_once(tokenizer):
    """A request example is the expanded sequence; its labels are on the plan, each step's
    own block and the conclusion, never on a repeated block."""
    recs = records(6, seed=5)
    batch = ml.TopologyCollator(tokenizer, "request")(recs)
    plain = ml.TopologyCollator(tokenizer, "sequential")(recs)
    widened = 0
    for b, rec in enumerate(recs):
        tokens = tokenize_record(rec, tokenizer)
        layout = ml.Layout.from_token_ids(tokens["input_ids"], tokenizer).for_requests()
        labels = batch["labels"][b]
        expected = torch.full((layout.T,), -100)
        own = torch.zeros(layout.T, dtype=torch.bool)
        own[:layout.prefix_len] = True
        for seg in layout.segments[1:]:
            spans = layout.repeated_spans(seg.branch)
            widened += len(spans)
            for _, a, z in spans:
                assert (labels[a:z] == -100).all(), f"a repeat of step {_} in {seg.branch}'s request is learnt"
            own[layout.own_start(seg.branch):seg.stop] = True
        ids = torch.tensor(layout.token_ids)
        expected[own] = ids[own]
        expected[:tokens["loss_from"]] = -100
        for sid in layout.plan.roots()[1:]:  # a later root's <Step> follows another request's last token
            expected[layout.segment(sid).start] = -100
        assert torch.equal(labels[:layout.T], expected)
        # each own token is learnt exactly once: as many labels as the plain trace, but for later roots' <Step>
        assert int((labels != -100).sum()) == int((plain["labels"][b] != -100).sum()) - len(layout.plan.roots()[1:])
    assert widened > len(recs)  # the records do repeat blocks (every conclusion, and steps with ancestors)


def test_examples_are_prepared_once_whatever_shape_they_come_in(tokenizer):
    recs = records(4, seed=3)
    collator = ml.TopologyCollator(tokenizer, "dag")
    prepared = collator.prepare(recs)
    copies = json.loads(json.dumps(recs))  # fresh dicts, as a datasets.Dataset hands them out
    assert all(collator.example(r) is e for r, e in zip(copies, prepared))
    tokenized = [tokenize_record(r, tokenizer) for r in recs]
    by_ids = ml.TopologyCollator(tokenizer, "dag")(tokenized)
    by_records = collator(copies)
    for key in ("input_ids", "labels", "position_ids", "attention_mask"):
        assert torch.equal(by_ids[key], by_records[key]), key
    # without loss_from the loss starts at the assistant turn's <Think>
    bare = [{"input_ids": t["input_ids"]} for t in tokenized]
    assert torch.equal(ml.TopologyCollator(tokenizer, "dag")(bare)["labels"], by_records["labels"])


def tile_table(num: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``[B, n, n]`` bool from a BlockMask's (num_blocks, indices) pair."""
    B, _, n = num.shape
    out = torch.zeros(B, n, n, dtype=torch.bool)
    for b in range(B):
        for i in range(n):
            out[b, i, idx[b, 0, i, :num[b, 0, i]].long()] = True
    return out


def materialize(mask, L: int) -> torch.Tensor:
    """``[B, L, L]``: what flex_attention attends to, read off the BlockMask's own tables —
    full tiles entirely, partial tiles where the mask_mod allows, empty tiles never."""
    from torch.nn.attention.flex_attention import create_mask

    bs = mask.BLOCK_SIZE[0]
    def tokens(t):
        return t.repeat_interleave(bs, 1).repeat_interleave(bs, 2)[:, :L, :L]

    partial = tokens(tile_table(mask.kv_num_blocks, mask.kv_indices))
    full = tokens(tile_table(mask.full_kv_num_blocks, mask.full_kv_indices))
    B = mask.kv_num_blocks.shape[0]
    return full | (partial & create_mask(mask.mask_mod, B, 1, L, L, device="cpu")[:, 0])


@needs_flex
@pytest.mark.parametrize("mode", ml.MODES)
def test_block_mask_is_the_dense_mask(tokenizer, mode):
    from torch.nn.attention.flex_attention import create_block_mask

    recs = records(3, seed=4)
    for multiple in (16, None):  # tiles that fit the batch, and a ragged last tile
        dense = ml.TopologyCollator(tokenizer, mode, pad_to_multiple_of=multiple)(recs)["attention_mask"]
        blocked = ml.TopologyCollator(tokenizer, mode, mask="block", block_size=16, pad_to_multiple_of=multiple)(recs)
        bm = blocked["attention_mask"]
        B, L = blocked["input_ids"].shape
        assert torch.equal(materialize(bm, L), dense[:, 0] == 0)
        if multiple:  # the same tiles torch classifies by evaluating the mask_mod on every pair
            ref = create_block_mask(bm.mask_mod, B, 1, L, L, device="cpu", BLOCK_SIZE=16)
            assert torch.equal(tile_table(bm.kv_num_blocks, bm.kv_indices), tile_table(ref.kv_num_blocks, ref.kv_indices))
            assert torch.equal(tile_table(bm.full_kv_num_blocks, bm.full_kv_indices),
                               tile_table(ref.full_kv_num_blocks, ref.full_kv_indices))
        # sparse for real: the dag rule skips tiles a causal mask would compute
        causal = torch.ones(L, L, dtype=torch.bool).tril()
        assert materialize(bm, L).sum() <= causal.sum() * B


@needs_flex
def test_block_mask_memory_grows_with_tiles_not_tokens_squared():
    from medverse_lab.training.collator import TopologyExample, token_groups
    from medverse_lab.training.block_mask import block_mask_bytes

    plan = ml.Plan(ml.Step(i, f"a{i} -> b{i}", [i - 1] if i % 3 == 0 else []) for i in range(1, 17))
    sizes = {}
    for T in (4096, 16384):
        layout = ml.Layout.from_plan(plan, T // 8, {s: (T - T // 4) // 16 for s in plan.ids}, T - T // 8 -
                                     16 * ((T - T // 4) // 16), separator_lens=1)
        groups, vis = token_groups(layout, "dag")
        zeros = torch.zeros(layout.T, dtype=torch.long)
        batch = pad_examples([TopologyExample("x", zeros, zeros, zeros, groups, vis)], 0)
        sizes[T] = block_mask_bytes(block_mask(batch["groups"], batch["visibility"]))
    dense_bytes = 16384 ** 2 * 4  # the float32 additive mask the dense path hands the model: 1 GiB
    assert sizes[16384] * 2000 < dense_bytes  # measured: 0.40 MB
    assert sizes[16384] < 12 * sizes[4096]  # 4x the tokens: at most 16x the tiles, and the group tables grow 4x


@needs_flex
@pytest.mark.slow
def test_compiled_flex_attention_with_the_block_mask_equals_sdpa_with_the_dense_mask(tokenizer):
    from torch.nn.attention.flex_attention import flex_attention

    flex = torch.compile(flex_attention)  # compiled, flex uses the tile tables (eager ignores them)
    recs = records(3, seed=5)
    for mode in ("dag", "medverse-sft"):
        dense = ml.TopologyCollator(tokenizer, mode, pad_to_multiple_of=128)(recs)["attention_mask"]
        bm = ml.TopologyCollator(tokenizer, mode, mask="block", pad_to_multiple_of=128)(recs)["attention_mask"]
        torch.manual_seed(0)
        q, k, v = (torch.randn(dense.shape[0], 2, dense.shape[-1], 16) for _ in range(3))
        expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=dense)
        torch.testing.assert_close(flex(q, k, v, block_mask=bm), expected, atol=1e-5, rtol=1e-5)


def train_briefly(tokenizer, mode: str, seed: int, make_trainer):
    """A tiny Qwen2 trained 12 steps by ``make_trainer(model, collator, records, common_args)``;
    returns (loss on a fixed batch before, after, the trainer)."""
    collator = ml.TopologyCollator(tokenizer, mode, max_len=512)
    recs = records(16, seed=seed)
    probe = collator(recs[:8])
    model = tiny_model("qwen2", len(tokenizer)).train()

    def loss() -> float:
        with torch.no_grad():
            return float(model(**probe).loss)

    before = loss()
    common = dict(max_steps=12, per_device_train_batch_size=4, learning_rate=1e-2, report_to="none",
                  logging_steps=1, save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True,
                  remove_unused_columns=False)  # the records' columns are not model arguments
    trainer = make_trainer(model, collator, recs, common)
    trainer.train()
    return before, loss(), trainer


def test_transformers_trainer_trains_with_the_collator(tokenizer, tmp_path):
    from transformers import Trainer, TrainingArguments

    before, after, _ = train_briefly(tokenizer, "dag", 6, lambda model, collator, recs, common: Trainer(
        model=model, args=TrainingArguments(output_dir=str(tmp_path), **common),
        train_dataset=collator.prepare(recs), data_collator=collator))
    assert after < before - 1.0, (before, after)  # measured: 6.30 -> 3.91


def test_trl_sft_trainer_trains_with_the_collator(tokenizer, tmp_path):
    import datasets
    from trl import SFTConfig, SFTTrainer

    # the collator tokenizes: TRL must not prepare the dataset
    before, after, trainer = train_briefly(tokenizer, "layered", 7, lambda model, collator, recs, common: SFTTrainer(
        model=model, args=SFTConfig(output_dir=str(tmp_path), dataset_kwargs={"skip_prepare_dataset": True},
                                    bf16=False, gradient_checkpointing=False, **common),
        train_dataset=datasets.Dataset.from_list(recs), data_collator=collator, processing_class=tokenizer))
    assert after < before - 1.0, (before, after)  # measured: 6.30 -> 3.92
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 12 and logged[-1] < logged[0]


def test_bad_input_is_explained(tokenizer):
    collator = ml.TopologyCollator(tokenizer, "dag", max_len=64)
    good = records(2, seed=8)
    no_answer = {"id": "r2", "messages": [{"role": "user", "content": "Q?"}]}
    with pytest.raises(ValueError, match="record 'r2' has no user and assistant turns"):
        collator([good[0], no_answer])
    broken = json.loads(json.dumps(good[1]))
    broken["messages"][2]["content"] = broken["messages"][2]["content"].replace("Dependency: []", "Dependency: [9]", 1)
    with pytest.raises(ValueError, match=r"(?s)record '1': .*unknown step 9"):
        collator([broken])
    with pytest.raises(ValueError, match=r"record '0' has \d+ tokens, more than max_len=64; .*collator.prepare"):
        collator(good[:1])
    with pytest.raises(ValueError, match="record at position 1: no <Think> or <Plan> token and no loss_from"):
        collator([{"input_ids": tokenize_record(good[0], tokenizer)["input_ids"]}, {"input_ids": [100, 101, 102]}])
    with pytest.raises(TypeError, match="record at position 0: expected a MedVerse record .* got str"):
        collator(["<Plan>"])
    with pytest.raises(ValueError, match="unknown mode 'tree'"):
        ml.TopologyCollator(tokenizer, "tree")
    with pytest.raises(ValueError, match="mask='sparse'"):
        ml.TopologyCollator(tokenizer, mask="sparse")
    with pytest.raises(ValueError, match=r"no example fits max_len=64: the shortest of 2 is \d+ tokens"):
        collator.prepare(good)
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    plain = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, "<unk>")))
    with pytest.raises(ValueError, match="no single token for <Think>.*add_medverse_tokens"):
        ml.TopologyCollator(plain)


def test_padding_rows_see_only_padding(tokenizer):
    collator = ml.TopologyCollator(tokenizer, "dag")
    examples = collator.prepare(records(2, seed=9))
    batch = pad_examples(examples, 0, pad_to_multiple_of=64)
    allowed = allowed_mask(batch["groups"], batch["visibility"])
    for b, e in enumerate(examples):
        T = len(e)
        assert not allowed[b, T:, :T].any() and allowed[b, T:, T:].diagonal(dim1=-2, dim2=-1).all()
