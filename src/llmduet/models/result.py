"""Folding a stream of events into a :class:`ChatResult` with uniform timing.

Definitions follow vLLM's ``bench serve`` and NVIDIA GenAI-Perf:

* TTFT: from the call to the first non-empty output (text or tool-call fragment);
* ITL: the gaps between successive output chunks;
* TPOT: ``(end-to-end - TTFT) / (output tokens - 1)``;
* tokens/s: output tokens / end-to-end time.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass, field
from typing import Any

from llmduet.models.types import (
    ChatEvent,
    Finish,
    Location,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    now,
)


@dataclass(slots=True)
class ChatResult:
    model: str
    location: Location
    started: float
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage | None = None
    finish_reason: str | None = None
    output_times: list[float] = field(default_factory=list)
    finished: float | None = None
    cost_usd: float | None = None

    @property
    def total_s(self) -> float:
        end = self.finished if self.finished is not None else now()
        return end - self.started

    @property
    def ttft_s(self) -> float | None:
        return self.output_times[0] - self.started if self.output_times else None

    @property
    def itl_s(self) -> list[float]:
        times = self.output_times
        return [b - a for a, b in itertools.pairwise(times)]

    @property
    def mean_itl_s(self) -> float | None:
        gaps = self.itl_s
        return statistics.fmean(gaps) if gaps else None

    @property
    def output_tokens(self) -> int:
        return self.usage.completion_tokens if self.usage else len(self.output_times)

    @property
    def tpot_s(self) -> float | None:
        ttft = self.ttft_s
        if ttft is None or self.output_tokens < 2:
            return None
        return (self.total_s - ttft) / (self.output_tokens - 1)

    @property
    def tokens_per_s(self) -> float | None:
        total = self.total_s
        return self.output_tokens / total if total > 0 and self.output_tokens else None

    def to_dict(self) -> dict[str, Any]:
        """The machine-readable summary the CLI prints with ``--json``."""
        ttft = self.ttft_s
        tps = self.tokens_per_s
        return {
            "model": self.model,
            "text": self.text,
            "tool_calls": [call.to_openai() for call in self.tool_calls] or None,
            "finish_reason": self.finish_reason,
            "ttft_ms": round(ttft * 1000, 2) if ttft is not None else None,
            "tokens_per_s": round(tps, 2) if tps is not None else None,
            "prompt_tokens": self.usage.prompt_tokens if self.usage else None,
            "output_tokens": self.output_tokens,
            "total_ms": round(self.total_s * 1000, 2),
            "cost_usd": self.cost_usd,
            "location": self.location,
            "error": None,
        }


class ResultBuilder:
    """Accumulates events as they stream; call :meth:`finish` at the end."""

    def __init__(self, model: str, location: Location, started: float | None = None) -> None:
        self.result = ChatResult(
            model=model, location=location, started=now() if started is None else started
        )
        self._text_parts: list[str] = []
        self._calls: dict[int, list[str | None]] = {}
        self._args: dict[int, list[str]] = {}

    def add(self, event: ChatEvent) -> None:
        result = self.result
        if isinstance(event, TextDelta):
            if event.text:
                self._text_parts.append(event.text)
                result.output_times.append(event.t)
        elif isinstance(event, ToolCallDelta):
            call = self._calls.setdefault(event.index, [None, None])
            call[0] = call[0] or event.id
            call[1] = call[1] or event.name
            self._args.setdefault(event.index, []).append(event.arguments)
            if event.arguments or event.name:
                result.output_times.append(event.t)
        elif isinstance(event, Usage):
            result.usage = event
        elif isinstance(event, Finish):
            result.finish_reason = event.reason

    def finish(self) -> ChatResult:
        result = self.result
        result.finished = now()
        result.text = "".join(self._text_parts)
        result.tool_calls = [
            ToolCall(
                id=call[0] or f"call_{index}",
                name=call[1] or "",
                arguments="".join(self._args.get(index, [])),
            )
            for index, call in sorted(self._calls.items())
        ]
        return result
