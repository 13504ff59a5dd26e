"""Helpers for the server tests: a real ``medverse-lab serve`` process on a free localhost
port (the embedded teaching model), and what the runs decoded alone look like."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import medverse_lab as ml

from conftest import free_port, stop_process, wait_for_http

MODEL = "medverse-teaching-model"  # the id the server gives the embedded model
CAP = 200  # max tokens per phase (the same caps for the run decoded alone)
PHASE_CAPS = {"max_plan_tokens": CAP, "max_step_tokens": CAP, "max_conclusion_tokens": CAP}
QUESTION = (Path(ml.__file__).parent / "examples" / "question.txt").read_text(encoding="utf-8").strip()


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    port: int

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=10).json()


@contextmanager
def serving(*args: str, env: dict | None = None, timeout: float = 120):
    """A server process with ``args``; stopped (SIGTERM, then killed) afterwards."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "medverse_lab.cli", "serve", "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TQDM_DISABLE": "1", **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(proc, f"{url}/health", timeout)
        yield Server(url, proc, port)
    finally:
        stop_process(proc, timeout=40)


@pytest.fixture(scope="session")
def server():
    """One default server shared by the server test modules (a long queue timeout: 32 clients
    on a loaded CI machine wait longer than an operator's default allows)."""
    with serving("--max-batch", "8", "--queue-timeout", "600") as s:
        yield s.url


@pytest.fixture(scope="session")
def engine():
    return ml.Engine.load()


@pytest.fixture(scope="session")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server}/v1", api_key="not-needed", max_retries=0, timeout=120)


def alone(engine, question, **kw):
    return engine.run(question, temperature=0, **PHASE_CAPS, **kw)


def completion_of(engine, run) -> str:
    return engine.decode(run.layout.base.token_ids[len(engine.encode(run.prompt)):])


def chat_turn_of(engine, run) -> str:
    """A chat reply: the whole assistant turn, ``<Think>`` (the prompt's last line) to ``</Think>``."""
    return "<Think>\n" + completion_of(engine, run)


def reply_tokens(engine, run) -> int:
    """How many tokens the reply to ``run``'s prompt holds."""
    return run.layout.base.T - len(engine.encode(run.prompt))
