"""What ``duet serve`` does, independent of the web framework.

Turns validated OpenAI requests into engine work through the in-process backend and
back into OpenAI responses and SSE chunks. Every request-level problem becomes a
:class:`ServingError` *before* a stream starts, so clients get a proper 4xx, not a broken
stream.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import numpy as np
from pydantic import BaseModel

from llmduet import errors
from llmduet.embeddings import MiniLMEmbedder
from llmduet.models.llamacpp import LlamaCppBackend
from llmduet.models.result import ResultBuilder
from llmduet.models.types import ChatEvent, ChatRequest, Finish, TextDelta, ToolCallDelta, Usage
from llmduet.serve.errors import ServingError, from_duet_error
from llmduet.serve.metrics import ServerMetrics
from llmduet.serve.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    FunctionCall,
    ModelCard,
    ModelList,
    NamedToolChoice,
    ToolCallDeltaOut,
    ToolCallOut,
    UsageInfo,
    completion_id,
    created_now,
)

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
MAX_EMBEDDING_INPUTS = 2048


@dataclass(slots=True)
class ServedModel:
    name: str
    backend: LlamaCppBackend
    created: int = field(default_factory=created_now)


def to_chat_request(
    request: ChatCompletionRequest, default_max_tokens: int | None = None
) -> ChatRequest:
    """The model-layer request; ``default_max_tokens`` caps requests that set no limit."""
    limit = request.output_limit
    return ChatRequest(
        messages=[m.model_dump(exclude_none=True) for m in request.messages],
        temperature=request.temperature,
        top_p=request.top_p,
        max_tokens=limit if limit is not None else default_max_tokens,
        stop=request.stop_list or None,
        seed=request.seed,
        tools=[t.model_dump(exclude_none=True) for t in request.tools] if request.tools else None,
        tool_choice=(
            request.tool_choice.model_dump()
            if isinstance(request.tool_choice, NamedToolChoice)
            else request.tool_choice
        ),
        response_format=(
            request.response_format.model_dump(by_alias=True, exclude_none=True)
            if request.response_format
            else None
        ),
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
    )


def sse(payload: BaseModel) -> str:
    """One server-sent event: ``data: {json}`` and a blank line."""
    return f"data: {payload.model_dump_json()}\n\n"


class ChatService:
    def __init__(
        self,
        models: list[ServedModel],
        metrics: ServerMetrics,
        default_max_tokens: int | None = None,
    ) -> None:
        self.models = {model.name: model for model in models}
        self.metrics = metrics
        self.default_max_tokens = default_max_tokens
        self.ready = False
        self.load_error: str | None = None
        self._embedder: MiniLMEmbedder | None = None

    # ---- lifecycle ------------------------------------------------------------------

    async def load(self) -> None:
        """Load every model (and the embedder); ``/health`` turns ready afterwards."""
        try:
            for model in self.models.values():
                await model.backend.prepare()
            self._embedder = await asyncio.to_thread(MiniLMEmbedder)
        except errors.DuetError as exc:
            self.load_error = str(exc)
            return
        self.ready = True

    def close(self, grace_s: float) -> None:
        for model in self.models.values():
            model.backend.unload(grace_s)

    def queue_depth(self) -> int:
        return sum(m.backend.engine_stats()[1] for m in self.models.values() if self.ready)

    def active_sequences(self) -> int:
        return sum(m.backend.engine_stats()[0] for m in self.models.values() if self.ready)

    # ---- models -----------------------------------------------------------------------

    def model_list(self) -> ModelList:
        cards = [ModelCard(id=m.name, created=m.created) for m in self.models.values()]
        cards.append(ModelCard(id=EMBEDDING_MODEL, created=created_now()))
        return ModelList(data=cards)

    def _model(self, name: str) -> ServedModel:
        self._require_ready()
        if name not in self.models:
            raise ServingError(
                404,
                f"the model '{name}' does not exist; served models: {', '.join(self.models)}",
                param="model",
                code="model_not_found",
            )
        return self.models[name]

    def _require_ready(self) -> None:
        if not self.ready:
            raise ServingError(
                503,
                "the model is still loading: retry shortly",
                type="server_error",
                code="loading",
                headers={"Retry-After": "1"},
            )

    # ---- chat -------------------------------------------------------------------------

    async def _start(
        self, request: ChatCompletionRequest
    ) -> tuple[ServedModel, AsyncGenerator[ChatEvent, None], ChatEvent | None, float]:
        """Validate, submit, and wait for the first event, so that every request error
        surfaces before a response starts."""
        model = self._model(request.model)
        started = time.perf_counter()
        events = cast(
            AsyncGenerator[ChatEvent, None],
            model.backend.stream(to_chat_request(request, self.default_max_tokens)),
        )
        try:
            first = await anext(events)
        except StopAsyncIteration:
            first = None
        except errors.DuetError as exc:
            await events.aclose()
            raise from_duet_error(exc) from None
        return model, events, first, started

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletion:
        model, events, first, started = await self._start(request)
        builder = ResultBuilder(model.name, "local", started=started)
        try:
            if first is not None:
                builder.add(first)
            async for event in events:
                builder.add(event)
        except errors.DuetError as exc:
            raise from_duet_error(exc) from None
        finally:
            await events.aclose()
        result = builder.finish()
        usage = result.usage or Usage(0, 0)
        self.metrics.observe(result.ttft_s, result.total_s, usage.completion_tokens)
        tool_calls = [
            ToolCallOut(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments))
            for c in result.tool_calls
        ]
        return ChatCompletion(
            id=completion_id(),
            created=created_now(),
            model=model.name,
            choices=[
                Choice(
                    message=AssistantMessage(
                        content=None if tool_calls else result.text, tool_calls=tool_calls or None
                    ),
                    finish_reason=_finish(result.finish_reason),
                )
            ],
            usage=_usage(usage),
        )

    async def stream(self, request: ChatCompletionRequest) -> AsyncIterator[str]:
        """Validate and start; returns the SSE frames to send (errors raised before)."""
        model, events, first, started = await self._start(request)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return self._frames(model, events, first, started, include_usage)

    async def _frames(
        self,
        model: ServedModel,
        events: AsyncGenerator[ChatEvent, None],
        first: ChatEvent | None,
        started: float,
        include_usage: bool,
    ) -> AsyncIterator[str]:
        ident, created = completion_id(), created_now()

        def chunk(delta: Delta, finish: str | None = None) -> str:
            return sse(
                ChatCompletionChunk(
                    id=ident,
                    created=created,
                    model=model.name,
                    choices=[ChunkChoice(delta=delta, finish_reason=finish)],
                )
            )

        builder = ResultBuilder(model.name, "local", started=started)
        usage_frame: str | None = None
        yield chunk(Delta(role="assistant", content=""))
        try:
            pending = [first] if first is not None else []
            async for event in _chain(pending, events):
                builder.add(event)
                if isinstance(event, TextDelta) and event.text:
                    yield chunk(Delta(content=event.text))
                elif isinstance(event, ToolCallDelta):
                    yield chunk(
                        Delta(
                            tool_calls=[
                                ToolCallDeltaOut(
                                    index=event.index,
                                    id=event.id,
                                    type="function",
                                    function={"name": event.name or "", "arguments": ""},
                                )
                            ]
                        )
                    )
                    yield chunk(
                        Delta(
                            tool_calls=[
                                ToolCallDeltaOut(
                                    index=event.index,
                                    function={"arguments": event.arguments},
                                )
                            ]
                        )
                    )
                elif isinstance(event, Finish):
                    yield chunk(Delta(), _finish(event.reason))
                elif isinstance(event, Usage) and include_usage:
                    # Sent after the finish chunk, as OpenAI does.
                    usage_frame = sse(
                        ChatCompletionChunk(
                            id=ident,
                            created=created,
                            model=model.name,
                            choices=[],
                            usage=_usage(event),
                        )
                    )
        except errors.DuetError as exc:
            yield sse(from_duet_error(exc).body())
        finally:
            await events.aclose()
        if usage_frame:
            yield usage_frame
        yield "data: [DONE]\n\n"
        result = builder.finish()
        self.metrics.observe(result.ttft_s, result.total_s, result.output_tokens)

    # ---- embeddings -------------------------------------------------------------------

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        self._require_ready()
        if request.model not in (EMBEDDING_MODEL, *self.models):
            raise ServingError(
                404,
                f"the embedding model '{request.model}' does not exist; use '{EMBEDDING_MODEL}'",
                param="model",
                code="model_not_found",
            )
        texts = [request.input] if isinstance(request.input, str) else request.input
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise ServingError(
                400, f"at most {MAX_EMBEDDING_INPUTS} inputs per request", param="input"
            )
        if any(not text for text in texts):
            raise ServingError(400, "`input` must not contain empty strings", param="input")
        assert self._embedder is not None
        result = await asyncio.to_thread(self._embedder.embed, texts)
        vectors = result.vectors
        if request.dimensions is not None:
            if request.dimensions > vectors.shape[1]:
                raise ServingError(
                    400, f"dimensions must be at most {vectors.shape[1]}", param="dimensions"
                )
            vectors = vectors[:, : request.dimensions]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        data = [
            EmbeddingData(
                index=index,
                embedding=(
                    base64.b64encode(vector.astype("<f4").tobytes()).decode()
                    if request.encoding_format == "base64"
                    else vector.tolist()
                ),
            )
            for index, vector in enumerate(vectors)
        ]
        tokens = result.total_tokens
        return EmbeddingResponse(
            data=data,
            model=request.model,
            usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        )


async def _chain(
    first: list[ChatEvent], rest: AsyncIterator[ChatEvent]
) -> AsyncIterator[ChatEvent]:
    for event in first:
        yield event
    async for event in rest:
        yield event


def _finish(reason: str | None) -> str:
    return reason if reason in ("stop", "length", "tool_calls", "content_filter") else "stop"


def _usage(usage: Usage) -> UsageInfo:
    return UsageInfo(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )
