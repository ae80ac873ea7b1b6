"""The ASGI application of ``duet gateway``: thin routes over :class:`Gateway`.

Request bodies are validated only as far as the gateway depends on them (a route name,
well-formed messages); everything else is forwarded as the client sent it, so parameters
this gateway has never heard of still reach the upstream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from llmduet.gateway.service import Caller, Gateway, JSONReply
from llmduet.serve.app import BodyLimit, add_openai_error_handlers
from llmduet.serve.protocol import ErrorResponse, StreamOptions
from llmduet.serve.routes import SSEResponse

log = logging.getLogger("llmduet.gateway")

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 502, 503)
}


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


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def caller(request: Request) -> Caller:
    return _gateway(request).authenticate(request.headers.get("authorization"))


def _render(reply: JSONReply) -> Response:
    return Response(reply.body, status_code=reply.status, headers=reply.headers)


def create_gateway_app(gateway: Gateway) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.aclose()

    app = FastAPI(
        title="llmduet gateway",
        version="0.1.0",
        lifespan=lifespan,
        description="OpenAI-compatible gateway: routes each request by policy, keeps "
        "private data in-house, fails over, and audits what went where.",
    )
    app.state.gateway = gateway
    add_openai_error_handlers(app, log)
    v1 = APIRouter(prefix="/v1", responses=ERRORS)

    @v1.post("/chat/completions", responses={200: {"content": {"text/event-stream": {}}}})
    async def chat_completions(
        body: GatewayChatRequest, request: Request, who: Caller = Depends(caller)
    ) -> Response:
        raw = json.loads(await request.body())
        reply = await gateway.chat(raw, who, request.headers)
        if isinstance(reply, JSONReply):
            return _render(reply)
        return SSEResponse(reply.frames, headers=reply.headers)

    @v1.post("/embeddings")
    async def embeddings(
        body: GatewayEmbeddingRequest, request: Request, who: Caller = Depends(caller)
    ) -> Response:
        raw = json.loads(await request.body())
        return _render(await gateway.embeddings(raw, who, request.headers))

    @v1.get("/models")
    async def models(who: Caller = Depends(caller)) -> JSONResponse:
        return JSONResponse(gateway.model_list())

    @app.get("/health")
    async def health() -> JSONResponse:
        status, body = gateway.health()
        return JSONResponse(body, status_code=status)

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(
            gateway.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    app.include_router(v1)
    app.add_middleware(BodyLimit, max_bytes=gateway.spec.max_body_bytes)
    return app
