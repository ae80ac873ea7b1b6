"""Asking a judge model for JSON of a given shape, retried: shared by every judged metric.

The schema goes out as ``response_format`` ``json_schema``: llama.cpp models (in process
or behind ``duet serve``) are grammar-constrained to it, OpenAI models use structured
outputs. A reply that still does not parse, or does not pass ``accept``, is retried with
another seed at a higher temperature; after the last try :class:`JudgeFailed` says why.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from llmduet.errors import DuetError
from llmduet.models.base import ChatBackend
from llmduet.models.types import ChatRequest

T = TypeVar("T")
ATTEMPTS = 3


class JudgeFailed(Exception):
    """The judge gave no usable reply after every try."""


def messages(system: str, user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


async def ask_json(
    backend: ChatBackend,
    prompt: list[dict[str, str]],
    schema: dict[str, Any],
    accept: Callable[[Any], T | None],
    *,
    max_tokens: int = 512,
    seed: int = 0,
) -> tuple[T, int]:
    """``accept(parsed reply)`` (not None) and the attempt it took."""
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": schema, "strict": True},
    }
    problem = "no reply"
    for attempt in range(1, ATTEMPTS + 1):
        request = ChatRequest(
            messages=prompt,
            temperature=0.0 if attempt == 1 else 0.7,
            max_tokens=max_tokens,
            seed=seed + attempt,
            response_format=response_format,
        )
        try:
            text = (await backend.complete(request)).text
        except DuetError as exc:
            problem = str(exc)
            continue
        try:
            data = json.loads(text.strip().removeprefix("```json").removesuffix("```"))
        except json.JSONDecodeError:
            problem = f"unparseable reply {text[:80]!r}"
            continue
        value = accept(data)
        if value is not None:
            return value, attempt
        problem = f"a reply of the wrong shape {text[:80]!r}"
    raise JudgeFailed(f"judge failed after {ATTEMPTS} tries: {problem}")
