"""``medverse-lab serve``: the engine behind HTTP, in the shapes clients already speak.

- ``POST /generate``: SGLang's native endpoint, which the public MedVerse example client
  calls (``text``, ``sampling_params`` -> ``text``, ``meta_info``);
- ``POST /v1/chat/completions`` and ``POST /v1/completions``: the OpenAI shapes, with
  ``stream: true`` as server-sent events;
- ``GET /health``, ``GET /v1/models``.

This module is the HTTP side only: routes, access (Host check, API key), the body limit
and errors in OpenAI's shape. What a request means is :mod:`.protocol`; what is done with
it is :mod:`.service`; decoding is :mod:`.worker`.
"""

from __future__ import annotations

import hmac
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware

from .protocol import (MAX_BODY, ApiError, ChatCompletionChunk, ChatCompletionResponse, ChatRequest,
                       CompletionRequest, CompletionResponse, ErrorResponse, GenerateRequest, GenerateResponse, Health,
                       InvalidRequest, MethodNotAllowed, ModelCard, ModelList, NotFound, ServerError, TooLarge,
                       Unauthorized)
from .service import Service
from .worker import Worker

#: Host header values always allowed (besides the bound host): this machine's own names
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")

_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 503)}


def create_app(engine, *, mode: str | None = None, max_batch: int = 8, model_name: str | None = None,
               max_body: int = MAX_BODY, worker: Worker | None = None, max_model_len: int | None = None,
               max_queue: int = 64, queue_timeout: float = 60.0, api_key: str | None = None,
               host: str = "127.0.0.1", allowed_hosts=(), docs: bool = False) -> FastAPI:
    """A FastAPI app serving ``engine``.

    ``mode`` overrides the model's; ``max_batch`` caps how many requests decode together and
    ``max_queue`` how many wait (over it: 503), each at most ``queue_timeout`` seconds;
    ``max_model_len`` is the context (default: the model's ``max_position_embeddings``);
    ``max_body`` the request size in bytes. With ``api_key`` every route but ``/health``
    needs ``Authorization: Bearer <key>``. Requests must name ``host`` (the bound address),
    this machine, or one of ``allowed_hosts`` in their Host header (DNS rebinding); a
    wildcard bind (``0.0.0.0``) allows any unless ``allowed_hosts`` is given. ``docs``
    serves ``/docs`` and ``/openapi.json``. The app decodes in a thread of its own unless
    given a ``worker`` the caller runs.
    """
    mode = engine.check_mode(mode or engine.default_mode)
    name = model_name or getattr(engine.config, "_name_or_path", None) or "medverse-lab"
    max_model_len = max_model_len or default_context(engine)
    own = worker is None
    worker = worker or Worker(engine, max_batch=max_batch, max_queue=max_queue)
    service = Service(engine, worker, mode=mode, model_name=name, max_model_len=max_model_len,
                      queue_timeout=queue_timeout)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        if own:  # a worker the caller runs is the caller's to stop
            worker.close()

    app = FastAPI(title="medverse-lab", description=__doc__.split("\n\n")[0], lifespan=lifespan,
                  docs_url="/docs" if docs else None, redoc_url=None, openapi_url="/openapi.json" if docs else None)
    app.state.worker, app.state.engine, app.state.service = worker, engine, service

    # ----- errors: always OpenAI's shape, the field as data -------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(_request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc: RequestValidationError):
        return await _api_error(_request, validation_error(exc.errors()))

    @app.exception_handler(Exception)
    async def _crash(_request, exc: Exception):  # a bug, not the client's input: never a traceback on the wire
        return await _api_error(_request, ServerError(f"internal error: {type(exc).__name__}"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request, exc: StarletteHTTPException):
        err = {404: NotFound(f"no route {_request.url.path}", None),
               405: MethodNotAllowed(f"method {_request.method} is not allowed on {_request.url.path}", None),
               413: TooLarge(f"the request body is over {max_body} bytes", "body")}.get(exc.status_code)
        if err is None:  # the framework could not read the body (bad UTF-8, ...)
            err = InvalidRequest(f"the request body could not be read: {exc.detail}", "body")
            err.status = exc.status_code if 400 <= exc.status_code < 500 else 400
        return await _api_error(_request, err)

    # ----- access, outermost first: Host, then the key, then the body limit ------------------------
    # Starlette's limit counts a streamed (chunked) body as it is read; a declared Content-Length
    # over it is answered first here, in our error shape (Starlette's own reply is plain text)
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=max_body)
    app.add_middleware(_DeclaredLength, limit=max_body)
    if api_key:
        app.add_middleware(_ApiKey, key=api_key)
    wildcard = host in ("0.0.0.0", "::", "")
    if not wildcard or allowed_hosts:
        app.add_middleware(_HostCheck, allowed={host.lower(), *LOCAL_HOSTS, *(h.lower() for h in allowed_hosts)})

    # ----- routes ---------------------------------------------------------------------------------
    @app.get("/health", response_model=Health)
    async def health():
        status = "draining" if worker.deadline is not None else "ok"
        return Health(status=status, model=name, mode=mode, **worker.health())

    @app.get("/v1/models", response_model=ModelList, responses=_ERRORS)
    async def models():
        return ModelList(data=[ModelCard(id=name, created=service.created, max_model_len=max_model_len)])

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses={
        **_ERRORS, 200: {"content": {"text/event-stream": {"schema": ChatCompletionChunk.model_json_schema()}}}})
    async def chat(body: ChatRequest, request: Request):
        return _respond(await service.chat(body, request.is_disconnected))

    @app.post("/v1/completions", response_model=CompletionResponse, responses=_ERRORS)
    async def completions(body: CompletionRequest, request: Request):
        return _respond(await service.completion(body, request.is_disconnected))

    @app.post("/generate", response_model=GenerateResponse, responses=_ERRORS)
    async def generate(body: GenerateRequest, request: Request):
        return _respond(await service.generate(body, request.is_disconnected))

    return app


def _respond(out):
    if out is None:  # the client went away: nobody reads this
        return Response(status_code=499)
    if hasattr(out, "__aiter__"):
        return EventSourceResponse(out, headers={"Cache-Control": "no-cache"})
    return out


def default_context(engine) -> int:
    """The model's context in tokens: ``max_position_embeddings`` (else the tokenizer's
    ``model_max_length`` when it is a real number, else 2048)."""
    n = getattr(engine.config, "max_position_embeddings", None)
    if not n:
        n = getattr(engine.tokenizer, "model_max_length", 0)
        n = n if 0 < n < 10 ** 8 else 2048
    return int(n)


# pydantic names union members in the location ("str", "list[TextPart]", "function-after[...]"):
# not fields of the body, so they are left out of ``param``
_NOT_FIELDS = {"str", "int", "float", "bool", "dict", "list", "none", "constrained-str", "constrained-int"}


def validation_error(errors) -> InvalidRequest:
    """The request's validation errors as one :class:`InvalidRequest`: every problem in the
    message, ``param`` the most specific field at fault (dotted, ``messages.0.content``)."""
    if errors and errors[0].get("type") == "json_invalid":
        return InvalidRequest(f"the request body is not valid JSON: {errors[0].get('ctx', {}).get('error', '')}",
                              "body")
    if errors and errors[0].get("type") == "model_attributes_type":
        return InvalidRequest("the request body must be a JSON object (send Content-Type: application/json)", "body")

    def where(e) -> str:
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        return ".".join(p for p in loc if p not in _NOT_FIELDS and "[" not in p) or "body"

    ranked = sorted(errors, key=lambda e: (len(where(e).split(".")), e.get("type") == "value_error"), reverse=True)
    seen, parts = set(), []
    for e in ranked:
        msg = f"{where(e)}: {str(e.get('msg', 'invalid')).removeprefix('Value error, ')}"
        if msg not in seen:
            seen.add(msg)
            parts.append(msg)
    return InvalidRequest("; ".join(parts), where(ranked[0]) if ranked else "body")


class _DeclaredLength:
    """413 for a request whose Content-Length is over ``limit``, before anything is read."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            declared = dict(scope.get("headers") or []).get(b"content-length", b"")
            if declared.isdigit() and int(declared) > self.limit:
                err = TooLarge(f"the request body is over {self.limit} bytes", "body")
                return await JSONResponse(err.body(), status_code=413)(scope, receive, send)
        return await self.app(scope, receive, send)


class _HostCheck:
    """Refuse a request whose Host header is not this server (DNS rebinding: a web page
    whose name now points at 127.0.0.1 must not reach a local server)."""

    def __init__(self, app, allowed):
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1").lower()
            name = host[1:].split("]")[0] if host.startswith("[") else host.rsplit(":", 1)[0] if host.count(":") == 1 \
                else host
            if name not in self.allowed:
                err = ApiError(f"Host {host!r} is not this server; use {sorted(self.allowed)[0]!r} or start it with "
                               "--allowed-hosts", "host")
                err.status, err.kind = 403, "forbidden"
                return await JSONResponse(err.body(), status_code=403)(scope, receive, send)
        return await self.app(scope, receive, send)


class _ApiKey:
    """``Authorization: Bearer <key>`` on every route but ``/health`` (a liveness probe)."""

    def __init__(self, app, key: str):
        self.app, self.key = app, f"Bearer {key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("path") != "/health":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.key):
                err = Unauthorized("a valid API key is needed: send Authorization: Bearer <key>", "authorization")
                return await JSONResponse(err.body(), status_code=401,
                                          headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
        return await self.app(scope, receive, send)
