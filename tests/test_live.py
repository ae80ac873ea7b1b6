"""Against api.openai.com; run only when OPENAI_API_KEY is set."""

from __future__ import annotations

import pytest

from llmduet.config import load_settings
from llmduet.models.registry import ModelRegistry
from llmduet.models.types import ChatRequest

pytestmark = pytest.mark.live


async def test_chatgpt_streams_with_usage_and_cost() -> None:
    backend = ModelRegistry(load_settings()).backend("chatgpt")
    result = await backend.complete(
        ChatRequest.from_prompt("Reply with the word: pong", max_tokens=5)
    )
    assert "pong" in result.text.lower()
    assert result.usage is not None and result.usage.completion_tokens > 0
    assert result.cost_usd is not None and result.cost_usd > 0
    assert result.location == "external"
