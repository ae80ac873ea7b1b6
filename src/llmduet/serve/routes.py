"""Thin HTTP routes: parse, call the service, render. No serving logic lives here."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Send

from llmduet.serve.errors import ServingError
from llmduet.serve.protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorResponse,
    ModelList,
)
from llmduet.serve.serving import ChatService

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 503, 504)
}


class SSEResponse(StreamingResponse):
    """Server-sent events that always close their source, so a client that goes away
    has its sequence cancelled at once."""

    media_type = "text/event-stream"

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]


def service(request: Request) -> ChatService:
    chat: ChatService = request.app.state.service
    return chat


def require_api_key(request: Request) -> None:
    keys: list[str] = request.app.state.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else ""
    matches = [hmac.compare_digest(token.encode(), key.encode()) for key in keys]
    if not any(matches):
        raise ServingError(
            401,
            "invalid or missing API key: send 'Authorization: Bearer KEY'",
            code="invalid_api_key",
        )


router = APIRouter()
v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], responses=ERRORS)


@v1.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    chat = service(request)
    if body.stream:
        frames: AsyncIterator[str] = await chat.stream(body)
        return SSEResponse(frames, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    completion = await chat.complete(body)
    return JSONResponse(completion.model_dump(mode="json"))


@v1.post("/embeddings", response_model=EmbeddingResponse)
async def embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingResponse:
    return await service(request).embed(body)


@v1.get("/models", response_model=ModelList)
async def models(request: Request) -> ModelList:
    return service(request).model_list()


@router.get("/health", responses={503: {"model": ErrorResponse}})
async def health(request: Request) -> JSONResponse:
    chat = service(request)
    if chat.load_error:
        return JSONResponse({"status": "error", "error": chat.load_error}, status_code=503)
    if not chat.ready:
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ok", "models": list(chat.models)})


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(
        service(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


router.include_router(v1)
