"""LangChain adapter: any registered model as a ``BaseChatModel``.

One adapter over the backend seam serves every provider, so chains get the same
streaming, exact usage, timing and cost metadata whether the model is ChatGPT, an
OpenAI-compatible endpoint, or llama.cpp in process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    convert_to_openai_messages,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field

from llmduet.models.base import ChatBackend, iterate_blocking
from llmduet.models.registry import ModelRegistry, default_registry
from llmduet.models.result import ResultBuilder
from llmduet.models.types import (
    ChatEvent,
    ChatRequest,
    TextDelta,
    ToolCallDelta,
    Usage,
    now,
)


class DuetChatModel(BaseChatModel):
    """A LangChain chat model backed by a :class:`~llmduet.models.base.ChatBackend`.

    The final chunk of every stream carries ``usage_metadata`` and ``response_metadata``
    with ``model``, ``location``, ``finish_reason``, ``ttft_ms``, ``total_ms`` and
    ``cost_usd``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    backend: ChatBackend
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, exclude=True)
    tool_choice: str | dict[str, Any] | None = None

    @property
    def _llm_type(self) -> str:
        return "llmduet"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.backend.name, "temperature": self.temperature, "seed": self.seed}

    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any
    ) -> ChatRequest:
        def pick(key: str) -> Any:
            value = kwargs.get(key)
            return getattr(self, key) if value is None else value

        return ChatRequest(
            messages=convert_to_openai_messages(messages),
            temperature=pick("temperature"),
            top_p=pick("top_p"),
            max_tokens=pick("max_tokens"),
            stop=stop or self.stop,
            seed=pick("seed"),
            tools=pick("tools"),
            tool_choice=pick("tool_choice"),
        )

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        openai_tools = [convert_to_openai_tool(tool) for tool in tools]
        if tool_choice and tool_choice not in ("auto", "none", "required"):
            tool_choice = {"type": "function", "function": {"name": tool_choice}}
        return super().bind(tools=openai_tools, tool_choice=tool_choice, **kwargs)

    @staticmethod
    def _to_chunk(event: ChatEvent) -> ChatGenerationChunk | None:
        if isinstance(event, TextDelta):
            return ChatGenerationChunk(message=AIMessageChunk(content=event.text))
        if isinstance(event, ToolCallDelta):
            tool_chunk = {
                "index": event.index,
                "id": event.id,
                "name": event.name,
                "args": event.arguments,
                "type": "tool_call_chunk",
            }
            return ChatGenerationChunk(
                message=AIMessageChunk(content="", tool_call_chunks=[tool_chunk])  # type: ignore[list-item]
            )
        if isinstance(event, Usage):
            usage = UsageMetadata(
                input_tokens=event.prompt_tokens,
                output_tokens=event.completion_tokens,
                total_tokens=event.total_tokens,
            )
            return ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=usage))
        return None  # Finish: reported in the final chunk's metadata

    def _final_chunk(self, builder: ResultBuilder) -> ChatGenerationChunk:
        result = builder.finish()
        usage = result.usage
        result.cost_usd = self.backend.cost_model.cost(
            usage.prompt_tokens if usage else 0, result.output_tokens, result.total_s
        )
        ttft = result.ttft_s
        metadata = {
            "model": result.model,
            "model_name": result.model,
            "location": result.location,
            "finish_reason": result.finish_reason,
            "ttft_ms": round(ttft * 1000, 2) if ttft is not None else None,
            "total_ms": round(result.total_s * 1000, 2),
            "cost_usd": result.cost_usd,
        }
        return ChatGenerationChunk(
            message=AIMessageChunk(content="", response_metadata=metadata, chunk_position="last")
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        builder = ResultBuilder(self.backend.name, self.backend.location, started=now())
        for event in iterate_blocking(self.backend.stream(self._request(messages, stop, **kwargs))):
            builder.add(event)
            chunk = self._to_chunk(event)
            if chunk is None:
                continue
            if run_manager and isinstance(event, TextDelta):
                run_manager.on_llm_new_token(event.text, chunk=chunk)
            yield chunk
        yield self._final_chunk(builder)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        builder = ResultBuilder(self.backend.name, self.backend.location, started=now())
        async for event in self.backend.stream(self._request(messages, stop, **kwargs)):
            builder.add(event)
            chunk = self._to_chunk(event)
            if chunk is None:
                continue
            if run_manager and isinstance(event, TextDelta):
                await run_manager.on_llm_new_token(event.text, chunk=chunk)
            yield chunk
        yield self._final_chunk(builder)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))


def as_chat_model(name: str, registry: ModelRegistry | None = None, **params: Any) -> DuetChatModel:
    """A LangChain chat model for a registered model name (``llama``, ``chatgpt``, ...)."""
    backend = (registry or default_registry()).backend(name)
    return DuetChatModel(backend=backend, **params)


__all__ = ["DuetChatModel", "as_chat_model"]
