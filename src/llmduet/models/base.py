"""The backend seam: one async streaming call per model, everything else built on it."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from llmduet.models.pricing import CostModel
from llmduet.models.result import ChatResult, ResultBuilder
from llmduet.models.types import ChatEvent, ChatRequest, Location, now

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str = "ready"


class ChatBackend(ABC):
    """A chat model reachable through one streaming call.

    Implementations write :meth:`stream` only. It yields :class:`TextDelta` and
    :class:`ToolCallDelta` events as output arrives, then a :class:`Usage` with exact token
    counts and a :class:`Finish`. Each event is stamped when it is created, so timing is
    measured the same way for every backend.
    """

    def __init__(self, name: str, location: Location, cost_model: CostModel | None = None):
        self.name = name
        self.location: Location = location
        self.cost_model = cost_model or CostModel()

    @abstractmethod
    def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        """Stream one chat call's events."""

    async def prepare(self) -> None:
        """Do slow one-time set-up (load weights, open clients) before timing starts."""

    def readiness(self) -> Readiness:
        """Whether a call could run now, and if not, what to fix. Must be cheap."""
        return Readiness(True)

    async def aclose(self) -> None:
        """Release resources."""

    async def complete(
        self,
        request: ChatRequest,
        on_event: Callable[[ChatEvent], None] | None = None,
    ) -> ChatResult:
        """Run one call to the end, optionally observing each event; adds cost."""
        builder = ResultBuilder(self.name, self.location, started=now())
        async for event in self.stream(request):
            builder.add(event)
            if on_event is not None:
                on_event(event)
        result = builder.finish()
        usage = result.usage
        result.cost_usd = self.cost_model.cost(
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else result.output_tokens,
            result.total_s,
        )
        return result

    def complete_sync(self, request: ChatRequest) -> ChatResult:
        """Blocking :meth:`complete`, for scripts and notebooks without an event loop."""
        return asyncio.run(self.complete(request))

    def stream_sync(self, request: ChatRequest) -> Iterator[ChatEvent]:
        """Blocking :meth:`stream`."""
        return iterate_blocking(self.stream(request))


def iterate_blocking(stream: AsyncIterator[T]) -> Iterator[T]:
    """Drive an async iterator from synchronous code on a private event loop."""
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(anext(stream))
            except StopAsyncIteration:
                return
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            loop.run_until_complete(aclose())
        loop.close()
