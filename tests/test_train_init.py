"""``medverse-lab train --init FOLDER``: fine-tune an existing causal LM that has never
seen the MedVerse tags (a tiny Qwen2 built from config, its tokenizer without the tags)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import medverse_lab as ml
from medverse_lab import cli

from test_train import records, records_file


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return records_file(tmp_path_factory, 24)


@pytest.fixture(scope="module")
def base(tmp_path_factory, data):
    """A Qwen2 checkpoint folder (safetensors) whose byte-level BPE knows no MedVerse tag."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config

    folder = tmp_path_factory.mktemp("base")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    texts = [m["content"] for r in records(24) for m in r["messages"]]
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<|endoftext|>")
    assert "<Step>" not in tokenizer.get_vocab()
    tokenizer.save_pretrained(folder)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder, safe_serialization=True)
    return folder


def test_train_init_adds_the_tags_resizes_and_records_mode_and_data(base, data, tmp_path):
    from transformers import AutoTokenizer

    out = tmp_path / "tuned"
    done = subprocess.run([sys.executable, "-m", "medverse_lab.cli", "train", "--init", str(base), "--data", str(data),
                           "--out", str(out), "--mode", "layered", "--steps", "2", "--batch-size", "2",
                           "--eval-every", "1", "--eval-batches", "1"],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained 2 steps" in done.stdout
    before = AutoTokenizer.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(out)
    tags = ml.tag_ids(tokenizer)  # every tag one token now
    assert len(tokenizer) == len(before) + len(ml.TAGS) and min(tags.values()) >= len(before)
    engine = ml.Engine.load(out, device="cpu")
    assert engine.model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert engine.model.config.medverse_mode == "layered" and engine.default_mode == "layered"
    card = (out / "README.md").read_text()
    assert "`layered`" in card and str(data) in card and str(base) in card
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [1, 2] and all("eval_loss" in h for h in history)


def test_train_init_refuses_what_is_not_a_local_checkpoint(data, tmp_path, capsys):
    code = cli.main(["train", "--init", "Qwen/Qwen2.5-0.5B", "--data", str(data), "--out", str(tmp_path / "o"),
                     "--steps", "1"])
    assert code == 2
    assert "init 'Qwen/Qwen2.5-0.5B' is not a local folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    code = cli.main(["train", "--init", str(tmp_path / "empty"), "--data", str(data), "--out", str(tmp_path / "o"),
                     "--steps", "1"])
    assert code == 2 and "needs config.json and *.safetensors" in capsys.readouterr().err
