"""Relaying an upstream reply: SSE events in, events out, usage counted, placeholders restored.

Events are forwarded as they arrive, byte for byte unless something has to change: the
usage chunk the gateway asked for on the client's behalf is dropped when the client did
not ask for it, and a pseudonymised reply has its placeholders restored. A placeholder
split across chunks is held back by a :class:`StreamRestorer` per choice and per tool call.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from llmduet.gateway.pseudonymise import Pseudonymiser, StreamRestorer

DONE = b"data: [DONE]\n\n"


async def sse_events(lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The ``data:`` payloads of an event stream, one per event (comments dropped)."""
    data: list[bytes] = []
    async for raw in lines:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield b"\n".join(data)
                data = []
        elif line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
    if data:
        yield b"\n".join(data)


def frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def error_frame(message: str, code: str) -> bytes:
    return frame(
        {"error": {"message": message, "type": "server_error", "param": None, "code": code}}
    )


@dataclass(slots=True)
class ReplyTally:
    """What the audit and the budgets need from a reply."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    content_chunks: int = 0

    def take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.prompt_tokens = _count(usage.get("prompt_tokens"))
            self.completion_tokens = _count(usage.get("completion_tokens"))


def _count(value: Any) -> int | None:
    """A token count as the upstream reported it, if it is one."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return value if ok else None


@dataclass(slots=True)
class StreamTransformer:
    """Turns each upstream event into the bytes the client gets (possibly none)."""

    client_wants_usage: bool
    pseudonymiser: Pseudonymiser | None = None
    tally: ReplyTally = field(default_factory=ReplyTally)
    finished: bool = False  # a choice has reported its finish_reason
    _restorers: dict[tuple[int, int], StreamRestorer] = field(default_factory=dict)
    _template: dict[str, Any] | None = None

    def event(self, payload: bytes) -> tuple[bytes, bool]:
        """(bytes to send, whether this event carried output); raises ``ValueError`` on an
        event that is not JSON."""
        chunk = json.loads(payload)
        if not isinstance(chunk, dict):
            raise ValueError("an event that is not a JSON object")
        if "error" in chunk:
            return frame(chunk), False
        usage = chunk.get("usage")
        if usage:
            self.tally.take_usage(usage)
        raw = chunk.get("choices")
        choices = [c for c in raw if isinstance(c, dict)] if isinstance(raw, list) else []
        if not choices and usage and not self.client_wants_usage:
            return b"", False
        carried = any(has_output(choice.get("delta")) for choice in choices)
        self.finished = self.finished or any(c.get("finish_reason") for c in choices)
        self.tally.content_chunks += carried
        if self.pseudonymiser is None:
            return b"data: " + payload + b"\n\n", carried
        self._template = self._template or {k: v for k, v in chunk.items() if k != "choices"}
        for choice in choices:
            self._restore(choice)
        return frame(chunk), carried

    def _restore(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        index = int(choice.get("index") or 0)
        if isinstance(delta.get("content"), str):
            delta["content"] = self._restorer(index, -1).feed(delta["content"])
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                restorer = self._restorer(index, int(call.get("index") or 0))
                function["arguments"] = restorer.feed(function["arguments"])
        if choice.get("finish_reason") is not None:
            held = self._flush(index)
            if held:
                delta["content"] = (delta.get("content") or "") + held

    def _restorer(self, choice: int, tool: int) -> StreamRestorer:
        key = (choice, tool)
        if key not in self._restorers:
            assert self.pseudonymiser is not None
            self._restorers[key] = self.pseudonymiser.stream_restorer()
        return self._restorers[key]

    def _flush(self, choice: int) -> str:
        held = ""
        for (index, _tool), restorer in self._restorers.items():
            if index == choice:
                held += restorer.flush()
        return held

    def finish(self) -> bytes:
        """Text still held when the stream ends without a finish chunk."""
        if self.pseudonymiser is None or not self._restorers:
            return b""
        held = "".join(restorer.flush() for restorer in self._restorers.values())
        if not held:
            return b""
        delta = {"index": 0, "delta": {"content": held}, "finish_reason": None}
        return frame({**(self._template or {}), "choices": [delta]})


def has_output(delta: Any) -> bool:
    if not isinstance(delta, dict):
        return False
    return bool(delta.get("content") or delta.get("tool_calls") or delta.get("refusal"))
