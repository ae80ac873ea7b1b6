"""The ASGI application of ``duet serve``: lifecycle, middleware and error rendering."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmduet.models.llamacpp import LlamaCppBackend
from llmduet.serve.errors import ServingError, invalid_request
from llmduet.serve.metrics import ServerMetrics
from llmduet.serve.routes import router
from llmduet.serve.serving import ChatService, ServedModel

log = logging.getLogger("llmduet.serve")

KNOWN_PATHS = {"/v1/chat/completions", "/v1/embeddings", "/v1/models", "/health", "/metrics"}


@dataclass
class ServeConfig:
    models: dict[str, Path | None] = field(default_factory=lambda: {"llama": None})
    api_keys: list[str] = field(default_factory=list)
    max_concurrency: int = 8
    queue: int = 64
    threads: int | None = None
    context: int = 2048
    request_timeout_s: float = 300.0
    requantize: str | None = None  # "q4_0" or "q8_0": see llmduet.engine.quantize
    requantize_models: dict[str, str] = field(default_factory=dict)  # per model, overrides
    default_max_tokens: int | None = None  # for requests that set none (else: the window)
    max_body_bytes: int = 4 * 1024 * 1024
    cors_origins: list[str] = field(default_factory=list)
    shutdown_grace_s: float = 10.0
    #: Called with the reason when a model fails to load (``duet serve`` then exits);
    #: without it the server stays up and ``/health`` reports the reason with a 503.
    on_load_error: Callable[[str], None] | None = None


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` (declared or streamed) with a 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_error(send, self.too_large())
            return
        if declared is not None:  # within the limit: it cannot grow past what it declared
            await self.app(scope, receive, send)
            return
        # No length (chunked): read it up to the limit here, so an oversized body is a 413
        # rather than an error deep inside the framework's body parsing.
        parts: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # the client left: let the app see it
                return
            parts.append(message.get("body", b""))
            seen += len(parts[-1])
            if seen > self.max_bytes:
                await send_error(send, self.too_large())
                return
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def too_large(self) -> ServingError:
        return ServingError(
            413, f"the request body is larger than {self.max_bytes} bytes", code="request_too_large"
        )


class CountRequests:
    """Prometheus count of requests by endpoint and final status."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
            self.metrics.requests.labels(path, str(status)).inc()


async def send_error(send: Send, error: ServingError) -> None:
    """Answer with ``error`` straight on an ASGI ``send``, outside any framework route."""
    response = JSONResponse(
        error.body().model_dump(), status_code=error.status, headers=error.headers
    )
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def add_openai_error_handlers(app: FastAPI, logger: logging.Logger) -> None:
    """Render every error as OpenAI-shaped JSON: ours with their status, validation
    errors as 400, the framework's own (404, 405) as they are, anything else as a 500
    that names only the exception type (the traceback goes to the log)."""

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError) -> JSONResponse:
        return JSONResponse(exc.body().model_dump(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await serving_error(request, invalid_request(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = ServingError(
            exc.status_code, str(exc.detail), code=None, headers=dict(exc.headers or {})
        )
        return await serving_error(request, error)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        error = ServingError(500, f"internal error: {type(exc).__name__}", type="server_error")
        return await serving_error(request, error)


def create_app(config: ServeConfig) -> FastAPI:
    metrics = ServerMetrics()
    models = [
        ServedModel(
            name,
            LlamaCppBackend(
                name,
                path,
                n_ctx=config.context,
                threads=config.threads,
                max_sequences=config.max_concurrency,
                max_queue=config.queue,
                timeout_s=config.request_timeout_s,
                requantize=config.requantize_models.get(name, config.requantize),
            ),
        )
        for name, path in config.models.items()
    ]
    chat = ChatService(models, metrics, config.default_max_tokens)
    metrics.track_engine(chat.queue_depth, chat.active_sequences)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def load() -> None:
            await chat.load()
            if chat.load_error and config.on_load_error:
                config.on_load_error(chat.load_error)

        loading = asyncio.create_task(load())
        yield
        loading.cancel()
        await asyncio.to_thread(chat.close, config.shutdown_grace_s)

    app = FastAPI(
        title="llmduet serve",
        version="0.1.0",
        lifespan=lifespan,
        description="OpenAI-compatible server for self-hosted GGUF models.",
    )
    app.state.service = chat
    app.state.shutdown_grace_s = config.shutdown_grace_s
    app.state.close_engines = lambda: chat.close(config.shutdown_grace_s)
    app.state.api_keys = list(config.api_keys)

    add_openai_error_handlers(app, log)

    app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(CountRequests, metrics=metrics)
    return app
