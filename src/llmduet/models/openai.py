"""The managed-API backend: the official ``openai`` SDK, for ChatGPT and any
OpenAI-compatible endpoint (vLLM, llama-server, Ollama, Azure OpenAI v1, ``duet serve``)."""

from __future__ import annotations

import asyncio
import os
import socket
import weakref
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlparse

import httpx
import openai

from llmduet import errors
from llmduet.models.base import ChatBackend, Readiness
from llmduet.models.pricing import CostModel
from llmduet.models.types import (
    ChatEvent,
    ChatRequest,
    Finish,
    Location,
    TextDelta,
    ToolCallDelta,
    Usage,
)

#: Sent when an endpoint needs no key; the SDK refuses an empty one.
NO_KEY = "no-key-needed"


class OpenAIBackend(ChatBackend):
    """Streams chat completions with ``stream_options.include_usage`` for exact usage.

    Failures before the first byte (connect errors, 429, 5xx) are retried by the SDK with
    exponential backoff, honouring ``Retry-After``; a stream that breaks after it started
    is never replayed, since the caller has already seen part of it.
    """

    def __init__(
        self,
        name: str,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        location: Location = "external",
        cost_model: CostModel | None = None,
        max_retries: int = 2,
        timeout_s: float = 120.0,
        defaults: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name, location, cost_model)
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self._api_key = api_key
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.defaults = defaults or {}
        # httpx connection pools belong to one event loop: keep one client per loop, so
        # sync helpers (a private loop per call) and async callers never share one.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def endpoint(self) -> str:
        return self.base_url or "https://api.openai.com/v1"

    def _resolve_key(self) -> str | None:
        if self._api_key:
            return self._api_key
        if self.api_key_env:
            return os.environ.get(self.api_key_env) or None
        return NO_KEY

    def readiness(self) -> Readiness:
        if self._resolve_key() is None:
            return Readiness(False, f"missing key: set {self.api_key_env} in the environment")
        if self.base_url:
            parsed = urlparse(self.base_url)
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            try:
                socket.create_connection((parsed.hostname or "", port), timeout=1.0).close()
            except OSError as exc:
                return Readiness(
                    False, f"endpoint unreachable: {self.base_url} ({exc.strerror or exc})"
                )
        return Readiness(True)

    def client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            key = self._resolve_key()
            if key is None:
                raise errors.ModelNotReadyError(
                    f"model '{self.name}' needs an API key: set {self.api_key_env}"
                )
            client = openai.AsyncOpenAI(
                api_key=key,
                base_url=self.base_url,
                max_retries=self.max_retries,
                timeout=self.timeout_s,
            )
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        for key in ("temperature", "top_p", "max_tokens"):
            value = getattr(request, key)
            value = self.defaults.get(key) if value is None else value
            if value is not None:
                params[key] = value
        if request.stop:
            params["stop"] = request.stop
        for key in ("seed", "response_format", "presence_penalty", "frequency_penalty"):
            value = getattr(request, key)
            if value is not None:
                params[key] = value
        if request.tools:
            params["tools"] = request.tools
            if request.tool_choice is not None:
                params["tool_choice"] = request.tool_choice
        return params

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        try:
            chunks = await self.client().chat.completions.create(**self._params(request))
        except openai.APIError as exc:
            raise self._translate(exc) from None
        started = False
        try:
            async for chunk in chunks:
                usage = getattr(chunk, "usage", None)
                for choice in chunk.choices:
                    delta = choice.delta
                    if delta is not None and delta.content:
                        started = True
                        yield TextDelta(delta.content)
                    for call in (delta.tool_calls if delta is not None else None) or []:
                        started = True
                        function = call.function
                        yield ToolCallDelta(
                            index=call.index,
                            id=call.id,
                            name=function.name if function else None,
                            arguments=(function.arguments or "") if function else "",
                        )
                    if choice.finish_reason:
                        yield Finish(choice.finish_reason)
                if usage is not None:
                    yield Usage(usage.prompt_tokens, usage.completion_tokens)
        except (httpx.HTTPError, openai.APIError) as exc:
            what = "after output began" if started else "before any output"
            raise errors.StreamInterruptedError(
                f"{self.name}: the stream from {self.endpoint} broke {what} ({_reason(exc)}); "
                "partial output was not retried — run the request again"
            ) from None

    def _translate(self, exc: openai.APIError) -> errors.BackendError:
        where = f"{self.name} ({self.endpoint})"
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            hint = f"check {self.api_key_env}" if self.api_key_env else "check the model's api key"
            return errors.AuthenticationError(f"{where} refused the API key: {hint}")
        if isinstance(exc, openai.NotFoundError):
            return errors.UpstreamNotFoundError(
                f"{where} has no model '{self.model}' (404): check `model` and `base_url` "
                "in duet.toml"
            )
        if isinstance(exc, openai.RateLimitError):
            return errors.RateLimitError(
                f"{where} is rate limiting (429) after {self.max_retries} retries: "
                "wait and try again, or lower the request rate"
            )
        if isinstance(exc, openai.APIConnectionError):
            return errors.EndpointUnreachableError(
                f"cannot reach {where} after {self.max_retries} retries ({_reason(exc)}): "
                "check the network and `base_url`"
            )
        if isinstance(exc, openai.InternalServerError):
            return errors.UpstreamServerError(
                f"{where} failed with a server error after {self.max_retries} retries "
                f"({_reason(exc)}): try again later"
            )
        if isinstance(exc, openai.APIStatusError) and _is_context_overflow(exc):
            return errors.ContextWindowError(
                f"{where}: the prompt is longer than the model's context window; "
                "shorten it or lower max_tokens"
            )
        return errors.BadRequestError(f"{where} rejected the request: {_reason(exc)}")


def _is_context_overflow(exc: openai.APIStatusError) -> bool:
    code = getattr(exc, "code", None)
    return code == "context_length_exceeded" or "context length" in str(exc).lower()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        message = exc.message
        body = exc.body
        if isinstance(body, dict):
            inner = body.get("error", body)
            if isinstance(inner, dict) and inner.get("message"):
                message = str(inner["message"])
        return f"HTTP {exc.status_code}: {message}"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
