"""Shared fixtures: a real byte-level BPE tokenizer with the MedVerse tags, real
transformers models (Qwen2, Llama) built from small configs, and an engine on one."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

import medverse_lab as ml
from medverse_lab.tokens import train_tokenizer

EXAMPLE = Path(ml.__file__).parent / "examples" / "stemi.txt"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
QUESTION = "A 54-year-old man has crushing chest pain. What is the next step? A. aspirin B. PCI C. fluids"


@pytest.fixture(scope="session")
def example_text() -> str:
    return EXAMPLE.read_text()


@pytest.fixture(scope="session")
def tokenizer(example_text):
    """A byte-level BPE trained on the example trace: tags are single special tokens."""
    return train_tokenizer([example_text] * 4, vocab_size=512)


def tiny_model(family: str, vocab_size: int, attn: str = "sdpa", seed: int = 0):
    """A randomly initialised causal LM of about 0.1M parameters, from config."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    cfg_cls = {"qwen2": Qwen2Config, "llama": LlamaConfig}[family]
    cfg = cfg_cls(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                  tie_word_embeddings=family == "qwen2")
    cfg._attn_implementation = attn
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def engine(tokenizer):
    """An engine on a tiny random Qwen2: real decoding, meaningless text."""
    return ml.Engine(tiny_model("qwen2", len(tokenizer)), tokenizer)


@pytest.fixture(scope="module")
def plan(example_text):
    """The example trace's plan: 5 steps, chunks [1,2,3] [4] [5]."""
    return ml.parse_trace(example_text).plan


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc, timeout: float = 30) -> None:
    """Stop ``proc`` as an operator would: SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for_http(proc, url: str, timeout: float) -> None:
    """Wait until ``url`` answers 200; fail with the process's output if it exits first."""
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            out = proc.stdout or proc.stderr
            pytest.fail(f"the server exited with {proc.returncode}: {out.read()[-3000:] if out else ''}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    pytest.fail(f"{url} did not answer within {timeout:.0f} s")
