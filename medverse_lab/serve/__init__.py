"""The HTTP server (FastAPI + uvicorn) for the engine; ``medverse-lab serve`` starts it (:mod:`..cli.serve`).

    medverse-lab serve                       # the embedded model on http://127.0.0.1:8000
    medverse-lab serve --model CKPT --port 30000 --mode dag --max-batch 16
    medverse-lab serve --model CKPT --backend vllm  # the same API; vLLM computes (request, sequential)

Endpoints: ``POST /generate`` (SGLang's native shape, as the public MedVerse client sends),
``POST /v1/chat/completions`` and ``POST /v1/completions`` (OpenAI shapes, streaming
included), ``GET /health``, ``GET /v1/models``. The wire shapes are :mod:`.protocol`, the
handlers :mod:`.service`, the HTTP side :mod:`.app`, the decoding loop :mod:`.worker`.

SIGTERM or SIGINT drains: no new connections, requests in flight finish for up to
``--drain-timeout`` seconds, then each still open ends with an error (a stream: an error
event and ``[DONE]``), and the process exits 0. A second signal ends the drain at once.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
