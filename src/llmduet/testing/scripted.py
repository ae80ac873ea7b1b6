"""Scripted replies shared by the fake backend and the fake OpenAI server."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from llmduet.errors import StreamInterruptedError
from llmduet.models.base import ChatBackend
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


@dataclass(slots=True)
class ToolCallReply:
    name: str
    arguments: str
    id: str = "call_1"


@dataclass(slots=True)
class Reply:
    """One scripted answer.

    ``chunks`` are streamed one by one, ``first_delay_s`` before the first and
    ``chunk_delay_s`` between the others. ``status`` other than 200 makes the fake server
    answer with that HTTP error; ``error`` makes the fake backend raise it before any
    output; ``break_after`` cuts the stream after that many chunks.
    """

    chunks: list[str] = field(default_factory=lambda: ["Hello", " world"])
    tool_calls: list[ToolCallReply] = field(default_factory=list)
    prompt_tokens: int = 5
    completion_tokens: int | None = None
    finish_reason: str | None = None
    first_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    status: int = 200
    error_message: str = "scripted error"
    error_code: str | None = None
    retry_after_ms: int | None = 1
    error: Exception | None = None
    break_after: int | None = None

    @classmethod
    def text(cls, text: str, **options: object) -> Reply:
        """A reply streaming ``text`` word by word (spaces kept with the following word)."""
        words = text.split(" ")
        chunks = [words[0]] + [" " + word for word in words[1:]]
        return cls(chunks=[chunk for chunk in chunks if chunk], **options)  # type: ignore[arg-type]

    @property
    def output_tokens(self) -> int:
        if self.completion_tokens is not None:
            return self.completion_tokens
        return len(self.chunks) + sum(1 for _ in self.tool_calls)

    @property
    def finish(self) -> str:
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")


class ScriptedBackend(ChatBackend):
    """Replays :class:`Reply` objects in order; records every request it receives.

    When the queue is empty it answers with ``default`` (or raises if that is ``None``).
    """

    def __init__(
        self,
        replies: Iterable[Reply | str] = (),
        *,
        name: str = "scripted",
        location: Location = "local",
        default: Reply | str | None = None,
        cost_model: CostModel | None = None,
    ) -> None:
        super().__init__(name, location, cost_model)
        self.replies: deque[Reply] = deque(
            Reply.text(r) if isinstance(r, str) else r for r in replies
        )
        self.default = Reply.text(default) if isinstance(default, str) else default
        self.requests: list[ChatRequest] = []

    def queue(self, *replies: Reply | str) -> None:
        self.replies.extend(Reply.text(r) if isinstance(r, str) else r for r in replies)

    def _next(self) -> Reply:
        if self.replies:
            return self.replies.popleft()
        if self.default is not None:
            return self.default
        raise AssertionError(f"{self.name}: no scripted reply left")

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        self.requests.append(request)
        reply = self._next()
        if reply.first_delay_s:
            await asyncio.sleep(reply.first_delay_s)
        if reply.error is not None:
            raise reply.error
        for position, chunk in enumerate(reply.chunks):
            if reply.break_after is not None and position >= reply.break_after:
                raise StreamInterruptedError(f"{self.name}: scripted stream break")
            if position and reply.chunk_delay_s:
                await asyncio.sleep(reply.chunk_delay_s)
            yield TextDelta(chunk)
        for index, call in enumerate(reply.tool_calls):
            yield ToolCallDelta(index=index, id=call.id, name=call.name, arguments=call.arguments)
        yield Usage(reply.prompt_tokens, reply.output_tokens)
        yield Finish(reply.finish)
