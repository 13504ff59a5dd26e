"""The engine options ``run``, ``eval`` and ``serve`` share, and the engine they ask for."""

from __future__ import annotations


def add_engine_arguments(parser, remote: bool = True) -> None:
    """``--model``, ``--device``, ``--backend`` (and ``--url``, ``--api-key``): what
    :func:`load_engine` reads."""
    parser.add_argument("--model", help="a checkpoint folder (default: the embedded teaching model; with "
                        "--backend remote: the served model's id, by default the server's first)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cuda when present, else cpu)")
    kinds = "local, vllm or remote" if remote else "local or vllm"
    parser.add_argument("--backend", default="local", choices=("local", "vllm", "remote")[:3 if remote else 2],
                        help=f"what computes the tokens: {kinds} (default local; vllm and remote decode the "
                        "request and sequential modes)")
    if remote:
        parser.add_argument("--url", help="with --backend remote: the OpenAI-compatible server, e.g. "
                            "http://127.0.0.1:8000 (a vllm serve process)")
        parser.add_argument("--tokenizer", help="with --backend remote: the checkpoint folder the server serves "
                            "(default: the served model's id when it is a local folder)")
        parser.add_argument("--api-key")


def load_engine(args):
    """The engine the command line asks for (:func:`add_engine_arguments`)."""
    from ..engine import Engine

    backend = getattr(args, "backend", "local")
    if backend == "remote":
        if not args.url:
            raise ValueError("--backend remote needs --url (the server's address, e.g. http://127.0.0.1:8000)")
        return Engine.remote(args.url, model=args.model, api_key=args.api_key, tokenizer=args.tokenizer)
    if getattr(args, "url", None):
        raise ValueError("--url goes with --backend remote")
    if backend == "vllm":
        return Engine.load(args.model, backend="vllm")
    return Engine.load(args.model, device=args.device)
