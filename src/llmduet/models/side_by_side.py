"""Run one request on several models at once, each to its own outcome.

A model that cannot run (missing key, file not found, endpoint down) becomes a skipped
outcome with the reason; an error in one model never stops the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmduet.errors import ConfigError, DuetError
from llmduet.models.registry import ModelRegistry
from llmduet.models.result import ChatResult
from llmduet.models.types import ChatEvent, ChatRequest, Location

EventSink = Callable[[str, ChatEvent], None]


@dataclass(slots=True)
class Outcome:
    model: str
    location: Location
    result: ChatResult | None = None
    error: str | None = None
    skipped: bool = False

    @property
    def ok(self) -> bool:
        return self.result is not None and self.error is None

    def to_dict(self) -> dict[str, Any]:
        if self.result is not None:
            data = self.result.to_dict()
        else:
            data = {
                "model": self.model,
                "text": "",
                "tool_calls": None,
                "finish_reason": None,
                "ttft_ms": None,
                "tokens_per_s": None,
                "prompt_tokens": None,
                "output_tokens": 0,
                "total_ms": None,
                "cost_usd": None,
                "location": self.location,
            }
        data["error"] = self.error
        data["skipped"] = self.skipped
        return data


async def run_one(
    registry: ModelRegistry, name: str, request: ChatRequest, on_event: EventSink | None
) -> Outcome:
    try:
        backend = registry.backend(name)
    except ConfigError as exc:  # a misconfigured entry is skipped; the others still run
        return Outcome(name, registry.spec(name).resolved_location, error=str(exc), skipped=True)
    readiness = backend.readiness()
    if not readiness.ready:
        return Outcome(name, backend.location, error=readiness.reason, skipped=True)
    try:
        await backend.prepare()
        sink = (lambda event: on_event(name, event)) if on_event else None
        result = await backend.complete(request, sink)
    except DuetError as exc:
        return Outcome(name, backend.location, error=str(exc))
    return Outcome(name, backend.location, result=result)


async def run_side_by_side(
    registry: ModelRegistry,
    names: list[str],
    request: ChatRequest,
    on_event: EventSink | None = None,
) -> list[Outcome]:
    """Outcomes in the order of ``names``. Unknown names raise before anything runs."""
    for name in names:
        registry.spec(name)
    return list(await asyncio.gather(*(run_one(registry, n, request, on_event) for n in names)))
