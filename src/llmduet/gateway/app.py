"""The ASGI application of ``duet gateway``: plain ASGI endpoints over :class:`Gateway`.

The gateway's budget is a millisecond or two per request, and a web framework's
middleware stack, dependency solver and response classes cost a good part of that (see
BENCHMARKS.md). So the endpoints are plain ASGI; FastAPI only describes them, for
``/openapi.json`` and ``/docs``, and answers every other path (404, 405). Request bodies
are validated only as far as the gateway depends on them (a route name, well-formed
messages); everything else is forwarded as the client sent it, so parameters this
gateway has never heard of still reach the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import Receive, Scope, Send

from llmduet.gateway.service import Caller, Gateway, JSONReply, StreamReply
from llmduet.serve.app import add_openai_error_handlers, send_error
from llmduet.serve.errors import ServingError, invalid_request
from llmduet.serve.protocol import ErrorResponse, StreamOptions

log = logging.getLogger("llmduet.gateway")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class GatewayMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class GatewayChatRequest(_Open):
    model: str = Field(description="a route name of this gateway")
    messages: list[GatewayMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None


class GatewayEmbeddingRequest(_Open):
    model: str = Field(description="a route name of this gateway")
    input: str | list[str] | list[int] | list[list[int]] = Field(min_length=1)


Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
SHUTDOWN_GRACE_S = 25.0
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


async def _send_json(send: Send, status: int, body: bytes, headers: Any = ()) -> None:
    extra = _encoded(dict(headers))
    names = {name for name, _ in extra}
    base = [h for h in JSON_HEADERS if h[0] not in names]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*base, *extra, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class GatewayASGI:
    """Routes the gateway's endpoints; hands every other request to ``fallback``."""

    def __init__(self, gateway: Gateway, fallback: FastAPI) -> None:
        self.gateway = gateway
        self.fallback = fallback
        # How long running streams may go on after a shutdown signal (GracefulServer).
        self.state = SimpleNamespace(shutdown_grace_s=SHUTDOWN_GRACE_S)
        self.routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/chat/completions"): self.chat_completions,
            ("POST", "/v1/embeddings"): self.embeddings,
            ("GET", "/v1/models"): self.models,
            ("GET", "/health"): self.health,
            ("GET", "/metrics"): self.metrics,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        handler = self.routes.get((scope.get("method", ""), scope.get("path", "")))
        if scope["type"] != "http" or handler is None:
            await self.fallback(scope, receive, send)
            return
        try:
            await handler(scope, receive, send)
        except ServingError as exc:
            await send_error(send, exc)
        except Exception as exc:  # a bug: say so, OpenAI-shaped, and log the traceback
            log.exception("unexpected error on %s", scope["path"])
            error = ServingError(500, f"internal error: {type(exc).__name__}", type="server_error")
            await send_error(send, error)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.gateway.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                gc.freeze()  # start-up objects are permanent: keep them out of collections
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.gateway.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ---- helpers ---------------------------------------------------------------------

    async def _body(self, receive: Receive) -> bytes:
        limit = self.gateway.spec.max_body_bytes
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ServingError(400, "the client closed the request before sending its body")
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > limit:
                raise ServingError(
                    413, f"the request body is larger than {limit} bytes", code="request_too_large"
                )
            if not message.get("more_body", False):
                return b"".join(parts)

    def _caller(self, scope: Scope) -> Caller:
        return self.gateway.authenticate(_header(scope, b"authorization"))

    async def _parsed(
        self, scope: Scope, receive: Receive, model: type[BaseModel]
    ) -> tuple[dict[str, Any], Caller, dict[str, str]]:
        caller = self._caller(scope)
        raw = await self._body(receive)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ServingError(400, f"the request body is not valid JSON: {exc}") from None
        try:
            model.model_validate(body)
        except ValidationError as exc:
            raise invalid_request(exc.errors()) from None
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name.startswith(b"x-duet-")
        }
        return body, caller, headers

    # ---- endpoints -------------------------------------------------------------------

    async def chat_completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, caller, headers = await self._parsed(scope, receive, GatewayChatRequest)
        reply = await self.gateway.chat(body, caller, headers)
        if isinstance(reply, JSONReply):
            await _send_json(send, reply.status, reply.body, reply.headers)
            return
        await self._stream(reply, receive, send)

    async def _stream(self, reply: StreamReply, receive: Receive, send: Send) -> None:
        """Send frames as they come; a client that leaves cancels the relay, which closes
        the upstream request and writes the audit row."""
        relay = asyncio.current_task()
        assert relay is not None

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            relay.cancel()

        watcher = asyncio.create_task(watch())
        frames: AsyncIterator[bytes] = reply.frames
        try:
            extra = _encoded(reply.headers)
            start = {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + extra}
            await send(start)
            async for frame in frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except asyncio.CancelledError:
            if not watcher.done():
                raise
            relay.uncancel()  # our own cancel (the client left) has done its job
        finally:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await frames.aclose()  # type: ignore[attr-defined]
            reply.close()

    async def embeddings(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, caller, headers = await self._parsed(scope, receive, GatewayEmbeddingRequest)
        reply = await self.gateway.embeddings(body, caller, headers)
        await _send_json(send, reply.status, reply.body, reply.headers)

    async def models(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._caller(scope)
        await _send_json(send, 200, json.dumps(self.gateway.model_list()).encode())

    async def health(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, body = self.gateway.health()
        await _send_json(send, status, json.dumps(body).encode())

    async def metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self.gateway.metrics.render()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """Header pairs as ASGI wants them; values from settings (rule names) made ASCII."""
    return [(k.lower().encode(), v.encode("ascii", "replace")) for k, v in headers.items()]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _described_app() -> FastAPI:
    """The endpoints' OpenAPI description; the signatures below document them, the
    requests themselves are served by :class:`GatewayASGI`."""
    app = FastAPI(
        title="llmduet gateway",
        version="0.1.0",
        description="OpenAI-compatible gateway: routes each request by policy, keeps "
        "private data in-house, fails over, and audits what went where.",
    )
    add_openai_error_handlers(app, log)
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 502, 503)
    }

    def chat_completions(body: GatewayChatRequest) -> None:
        """Chat completion, streamed (SSE) when ``stream`` is true."""

    def embeddings(body: GatewayEmbeddingRequest) -> None:
        """Embeddings from the route's upstream."""

    def models() -> None:
        """The routes of this gateway."""

    def health() -> None:
        """Usable replicas per upstream; 503 when no route has one."""

    def metrics() -> None:
        """Prometheus metrics."""

    routes: list[tuple[str, str, Callable[..., None], dict[int | str, dict[str, Any]]]] = [
        ("/v1/chat/completions", "POST", chat_completions, errors),
        ("/v1/embeddings", "POST", embeddings, errors),
        ("/v1/models", "GET", models, {401: {"model": ErrorResponse}}),
        ("/health", "GET", health, {503: {"description": "no upstream usable"}}),
        ("/metrics", "GET", metrics, {}),
    ]
    for path, method, endpoint, responses in routes:
        app.router.routes.append(
            APIRoute(path, endpoint, methods=[method], responses=responses, response_model=None)
        )
    return app


def create_gateway_app(gateway: Gateway) -> GatewayASGI:
    return GatewayASGI(gateway, _described_app())
