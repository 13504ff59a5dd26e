"""The MedVerse tags as special tokens, with embeddings initialised from their pieces."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

import medverse_lab as ml

from conftest import tiny_model


def plain_tokenizer(text: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE that has never heard of the tags."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok)


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_tags_become_single_tokens_initialised_from_their_pieces(family, example_text):
    tok = plain_tokenizer(example_text)
    pieces = {t: tok(t, add_special_tokens=False)["input_ids"] for t in ml.TAGS}
    assert all(len(p) > 1 for p in pieces.values())
    model = tiny_model(family, len(tok))
    before_in = model.get_input_embeddings().weight.detach().clone()
    before_out = model.get_output_embeddings().weight.detach().clone()

    ids = ml.add_medverse_tokens(tok, model)

    assert len(tok) == len(before_in) + 12 == model.get_input_embeddings().weight.shape[0]
    text = "<Step> Transient Step 1: a\nb\n</Step>"
    assert tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])[0] == "<Step>"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert torch.equal(emb[: len(before_in)], before_in)  # old rows untouched
    for tag, tid in ids.items():
        assert torch.allclose(emb[tid], before_in[pieces[tag]].mean(0))
        if family == "llama":  # untied head: its rows start from the pieces too
            assert torch.allclose(head[tid], before_out[pieces[tag]].mean(0))
    assert ml.add_medverse_tokens(tok, model) == ids  # a second call changes nothing
    assert len(tok) == emb.shape[0]


def test_tag_ids_of_a_medverse_tokenizer(tokenizer):
    ids = ml.tag_ids(tokenizer)
    assert list(ids) == list(ml.TAGS) and len(set(ids.values())) == 12


def test_a_trained_tokenizer_reloads_unchanged_with_a_qwen2_checkpoint(tokenizer, example_text, tmp_path):
    from transformers import AutoTokenizer, Qwen2Config

    tokenizer.save_pretrained(tmp_path)
    Qwen2Config(vocab_size=len(tokenizer)).save_pretrained(tmp_path)  # AutoTokenizer follows the model type
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = example_text + "\nHbA1c 9.1%, K+ 6.1 mmol/L, 120/80 mmHg; Dependency: [1, 12]"
    assert reloaded(text, add_special_tokens=False)["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_option_labels_are_one_token_each_only_as_whole_words(tokenizer, tmp_path):
    from transformers import AutoTokenizer, Qwen2Config

    text = "Options:\nA. aspirin\nB. vitamin A. and HbA.\nJ. E. coli"
    pieces = tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert {"A.", "B.", "J.", "E."} <= set(pieces)
    assert pieces.count("A.") == 2  # "Options:\nA." and "vitamin A.", not the "A." inside "HbA."
    tokenizer.save_pretrained(tmp_path)
    Qwen2Config(vocab_size=len(tokenizer)).save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    ids = reloaded(text, add_special_tokens=False)["input_ids"]
    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"] and reloaded.decode(ids) == text
