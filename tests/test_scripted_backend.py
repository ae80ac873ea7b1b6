from __future__ import annotations

import pytest

from llmduet.errors import RateLimitError, StreamInterruptedError
from llmduet.models.pricing import CostModel
from llmduet.models.types import ChatRequest, Finish, TextDelta, Usage
from llmduet.testing import Reply, ScriptedBackend, ToolCallReply

REQUEST = ChatRequest.from_prompt("hi")


async def test_replays_queued_replies_in_order_and_records_requests() -> None:
    backend = ScriptedBackend(["first answer", Reply(chunks=["sec", "ond"])])
    first = await backend.complete(REQUEST)
    second = await backend.complete(REQUEST)
    assert (first.text, second.text) == ("first answer", "second")
    assert first.usage is not None and first.usage.completion_tokens == 2
    assert len(backend.requests) == 2
    with pytest.raises(AssertionError, match="no scripted reply"):
        await backend.complete(REQUEST)


async def test_scripted_timings_show_in_the_result() -> None:
    backend = ScriptedBackend(
        [Reply(chunks=["a", "b", "c"], first_delay_s=0.05, chunk_delay_s=0.02)]
    )
    result = await backend.complete(REQUEST)
    assert result.ttft_s is not None and result.ttft_s >= 0.05
    assert all(gap >= 0.015 for gap in result.itl_s)


async def test_scripted_failures() -> None:
    backend = ScriptedBackend(
        [
            Reply(error=RateLimitError("slow down")),
            Reply(chunks=["a", "b", "c"], break_after=2),
        ]
    )
    with pytest.raises(RateLimitError):
        await backend.complete(REQUEST)
    seen: list[str] = []
    with pytest.raises(StreamInterruptedError):
        async for event in backend.stream(REQUEST):
            if isinstance(event, TextDelta):
                seen.append(event.text)
    assert seen == ["a", "b"]


async def test_event_order_and_tool_calls_and_cost() -> None:
    backend = ScriptedBackend(
        [Reply(chunks=[], tool_calls=[ToolCallReply("add", '{"a": 1}')], prompt_tokens=9)],
        cost_model=CostModel(usd_per_hour=3.6),
    )
    events = [event async for event in backend.stream(REQUEST)]
    assert isinstance(events[-2], Usage) and isinstance(events[-1], Finish)
    assert events[-1].reason == "tool_calls"
    backend.queue(Reply(chunks=["x"]))
    result = await backend.complete(REQUEST)
    assert result.cost_usd is not None and result.cost_usd > 0


def test_sync_helpers() -> None:
    backend = ScriptedBackend(["one two"])
    assert backend.complete_sync(REQUEST).text == "one two"
    backend.queue("three")
    texts = [e.text for e in backend.stream_sync(REQUEST) if isinstance(e, TextDelta)]
    assert texts == ["three"]
