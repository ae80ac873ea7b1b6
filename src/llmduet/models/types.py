"""The data that crosses the backend seam: requests, stream events and results.

Messages and tools use the OpenAI chat shape (plain dicts), the protocol every backend
already speaks. Every event carries ``t``, a ``time.perf_counter()`` reading, so timing
is computed the same way for every backend (see :mod:`llmduet.models.timing`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

Location = Literal["local", "external"]
Message = dict[str, Any]

now = time.perf_counter


@dataclass(slots=True)
class ChatRequest:
    """One chat call. ``None`` means "the model's default"."""

    messages: list[Message]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None  # OpenAI shape: json_object / json_schema
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    @classmethod
    def from_prompt(cls, prompt: str, system: str | None = None, **options: Any) -> ChatRequest:
        messages: list[Message] = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": prompt})
        return cls(messages=messages, **options)


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    t: float = field(default_factory=now)


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of a tool call; fragments with the same ``index`` concatenate."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    t: float = field(default_factory=now)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    t: float = field(default_factory=now)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str
    t: float = field(default_factory=now)


ChatEvent = TextDelta | ToolCallDelta | Usage | Finish


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str

    def parsed_arguments(self) -> Any:
        return json.loads(self.arguments or "{}")

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }
