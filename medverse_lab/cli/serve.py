"""``medverse-lab serve``: the engine over HTTP (see :mod:`medverse_lab.serve`).

    medverse-lab serve                       # the embedded model on http://127.0.0.1:8000
    medverse-lab serve --model CKPT --port 30000 --mode dag --max-batch 16
    medverse-lab serve --model CKPT --backend vllm  # the same API; vLLM computes (request, sequential)
"""

from __future__ import annotations

import os

from .engine_options import add_engine_arguments, load_engine


def add_arguments(parser) -> None:
    from ..serve.worker import PREFILL_CHUNK

    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    add_engine_arguments(parser, remote=False)
    parser.add_argument("--mode", help="dag, layered, speculative, sequential or request (default: the model's; "
                        "with --backend vllm: request or sequential)")
    parser.add_argument("--max-batch", type=int, default=8, help="requests decoded together (default 8)")
    parser.add_argument("--max-queue", type=int, default=64,
                        help="requests that may wait for room in the batch; over it: 503 with Retry-After (default 64)")
    parser.add_argument("--queue-timeout", type=float, default=60.0,
                        help="seconds a request may wait in the queue before it gets a 503 (default 60)")
    parser.add_argument("--drain-timeout", type=float, default=30.0,
                        help="on SIGTERM/SIGINT, seconds requests in flight may take to finish (default 30)")
    parser.add_argument("--max-model-len", type=int,
                        help="the context in tokens: longer prompts are refused (default: the model's "
                        "max_position_embeddings)")
    parser.add_argument("--prefill-chunk", type=int, default=PREFILL_CHUNK,
                        help="prompt tokens a run feeds per forward call while others decode: a long prompt "
                        "does not stall the batch (default %(default)s)")
    parser.add_argument("--api-key", default=os.environ.get("MEDVERSE_API_KEY"),
                        help="require 'Authorization: Bearer KEY' (default: $MEDVERSE_API_KEY; none: open)")
    parser.add_argument("--allowed-hosts", default="",
                        help="comma-separated Host names accepted besides the bound host and localhost")
    parser.add_argument("--docs", action="store_true", help="serve /docs and /openapi.json")
    parser.add_argument("--name", help="the model id clients see (default: the checkpoint's name)")


def main(args) -> int:
    import signal
    import threading
    import time

    import uvicorn

    from ..engine import check_engine_mode
    from ..engine.decode import positive_int
    from ..serve import create_app
    from ..serve.worker import PREFILL_CHUNK_IDLE, Worker

    for flag in ("max_batch", "max_queue", "prefill_chunk"):
        positive_int("--" + flag.replace("_", "-"), getattr(args, flag))
    if args.max_model_len is not None:
        positive_int("--max-model-len", args.max_model_len)
    for flag in ("queue_timeout", "drain_timeout"):
        if not getattr(args, flag) >= 0:
            raise ValueError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be >= 0 seconds")
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port {args.port}: not a TCP port number (1-65535)")
    if args.mode is not None:
        check_engine_mode(args.mode)  # before the model loads
    engine = load_engine(args)
    name = args.name or ("medverse-teaching-model" if args.model is None else None)
    worker = Worker(engine, max_batch=args.max_batch, thread=False, max_queue=args.max_queue,
                    prefill_chunk=args.prefill_chunk, prefill_chunk_idle=max(args.prefill_chunk, PREFILL_CHUNK_IDLE))
    app = create_app(engine, mode=args.mode, max_batch=args.max_batch, model_name=name, worker=worker,
                     max_model_len=args.max_model_len, queue_timeout=args.queue_timeout, api_key=args.api_key,
                     host=args.host, allowed_hosts=[h for h in args.allowed_hosts.split(",") if h.strip()],
                     docs=args.docs)
    # HTTP on a thread, decoding on the main thread (torch's CPU thread pool is fastest there);
    # uvicorn's own graceful shutdown is the backstop after the drain
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                           timeout_graceful_shutdown=int(args.drain_timeout) + 3))
    http = threading.Thread(target=server.run, name="http", daemon=True)
    http.start()
    while not server.started and http.is_alive():
        time.sleep(0.05)
    if not http.is_alive():
        print(f"medverse-lab serve: could not serve on {args.host}:{args.port}", flush=True)
        return 1

    def on_signal(sig, _frame):
        first = worker.deadline is None
        worker.drain(args.drain_timeout if first else 0)  # a second signal: stop now
        server.should_exit = True  # stop accepting; connections in flight stay open
        if first:
            print(f"medverse-lab serve: {signal.Signals(sig).name}, draining (up to {args.drain_timeout:g} s)",
                  flush=True)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"medverse-lab serve: {engine} on http://{args.host}:{args.port} (mode {args.mode or engine.default_mode}, "
          f"max batch {args.max_batch}, context {app.state.service.max_model_len})", flush=True)
    worker.run(alive=http.is_alive)
    server.should_exit = True
    http.join(timeout=10)  # the streams just ended get their last event out
    return 0
