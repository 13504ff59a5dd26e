"""Notebook code that builds a tiny random engine (a trained byte-level tokenizer and a
0.1M-parameter Qwen2), for browser tests of the widgets that run it."""

ENGINE = """\
import json, torch
import medverse_lab as ml
from transformers import Qwen2Config, AutoModelForCausalLM
from medverse_lab.tokens import train_tokenizer
text = open(ml.__path__[0] + "/examples/stemi.txt").read()
tok = train_tokenizer([text] * 4, vocab_size=512)
cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
cfg._attn_implementation = "sdpa"
torch.manual_seed(0)
engine = ml.Engine(AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval(), tok)
"""
