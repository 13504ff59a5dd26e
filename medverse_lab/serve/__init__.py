"""``medverse-lab serve``: an HTTP server (FastAPI + uvicorn) for the engine.

    medverse-lab serve                       # the embedded model on http://127.0.0.1:8000
    medverse-lab serve --model CKPT --port 30000 --mode dag --max-batch 16
    medverse-lab serve --model CKPT --backend vllm  # the same API; vLLM computes (request, sequential)

Endpoints: ``POST /generate`` (SGLang's native shape, as the public MedVerse client sends),
``POST /v1/chat/completions`` and ``POST /v1/completions`` (OpenAI shapes, streaming
included), ``GET /health``, ``GET /v1/models``. See :mod:`.app`.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app", "add_arguments", "main"]


def add_arguments(parser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    from ..engine.cli import add_engine_arguments

    add_engine_arguments(parser, remote=False)
    parser.add_argument("--mode", help="dag, layered, speculative, sequential or request (default: the model's; "
                        "with --backend vllm: request or sequential)")
    parser.add_argument("--max-batch", type=int, default=8, help="requests decoded together (default 8)")
    parser.add_argument("--name", help="the model id clients see (default: the checkpoint's name)")


def main(args) -> int:
    import threading
    import time

    import uvicorn

    from ..engine.cli import load_engine
    from ..engine.decode import _positive_int
    from .worker import Worker

    from ..engine import check_engine_mode

    _positive_int("--max-batch", args.max_batch)
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port {args.port}: not a TCP port number (1-65535)")
    if args.mode is not None:
        check_engine_mode(args.mode)  # before the model loads
    engine = load_engine(args)
    name = args.name or ("medverse-teaching-model" if args.model is None else None)
    worker = Worker(engine, max_batch=args.max_batch, thread=False)
    app = create_app(engine, mode=args.mode, max_batch=args.max_batch, model_name=name, worker=worker)
    # HTTP on a thread, decoding on the main thread (torch's CPU thread pool is fastest there)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"))
    http = threading.Thread(target=server.run, name="http", daemon=True)
    http.start()
    while not server.started and http.is_alive():
        time.sleep(0.05)
    if not http.is_alive():
        print(f"medverse-lab serve: could not serve on {args.host}:{args.port}", flush=True)
        return 1
    print(f"medverse-lab serve: {engine} on http://{args.host}:{args.port} (mode {args.mode or engine.default_mode}, "
          f"max batch {args.max_batch})", flush=True)
    try:
        worker.run(alive=http.is_alive)
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        http.join(timeout=10)
    return 0
