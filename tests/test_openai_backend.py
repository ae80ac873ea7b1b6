"""The openai backend through the real SDK over a real socket to a scripted server."""

from __future__ import annotations

import socket

import pytest

from llmduet import errors
from llmduet.models.openai import OpenAIBackend
from llmduet.models.pricing import BUILTIN_PRICES, CostModel
from llmduet.models.types import ChatRequest, TextDelta
from llmduet.testing import Reply, ScriptedOpenAIServer, ToolCallReply

REQUEST = ChatRequest.from_prompt("Say hello", system="be brief", temperature=0.3, max_tokens=20)


def backend_for(server: ScriptedOpenAIServer, **options: object) -> OpenAIBackend:
    options.setdefault("api_key", "sk-test")
    return OpenAIBackend("gpt", "gpt-4o-mini", base_url=server.base_url, **options)  # type: ignore[arg-type]


async def test_streams_text_with_exact_usage_and_cost(server: ScriptedOpenAIServer) -> None:
    server.queue(Reply(chunks=["Hel", "lo", " there"], prompt_tokens=12, completion_tokens=3))
    backend = backend_for(server, cost_model=CostModel(token_price=BUILTIN_PRICES["gpt-4o-mini"]))
    deltas: list[str] = []
    result = await backend.complete(
        REQUEST, lambda e: deltas.append(e.text) if isinstance(e, TextDelta) and e.text else None
    )
    assert deltas == ["Hel", "lo", " there"]
    assert result.text == "Hello there"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (12, 3)
    assert result.finish_reason == "stop"
    assert result.cost_usd == pytest.approx((12 * 0.15 + 3 * 0.60) / 1e6)
    assert result.ttft_s is not None and result.ttft_s > 0
    sent = server.requests[-1]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}
    assert sent["temperature"] == 0.3 and sent["max_tokens"] == 20
    assert server.headers[-1]["authorization"] == "Bearer sk-test"


async def test_tool_calls_stream_as_deltas_and_assemble(server: ScriptedOpenAIServer) -> None:
    server.queue(
        Reply(chunks=[], tool_calls=[ToolCallReply("add", '{"a": 2, "b": 40}', id="call_9")])
    )
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    request = ChatRequest.from_prompt("2+40?", tools=tools, tool_choice="auto")
    result = await backend_for(server).complete(request)
    assert result.finish_reason == "tool_calls"
    assert [(c.id, c.name) for c in result.tool_calls] == [("call_9", "add")]
    assert result.tool_calls[0].parsed_arguments() == {"a": 2, "b": 40}
    assert server.requests[-1]["tools"] == tools
    assert server.requests[-1]["tool_choice"] == "auto"


@pytest.mark.parametrize(
    ("status", "code", "error", "message"),
    [
        (401, "invalid_api_key", errors.AuthenticationError, "refused the API key"),
        (404, "model_not_found", errors.UpstreamNotFoundError, "has no model 'gpt-4o-mini'"),
        (400, "context_length_exceeded", errors.ContextWindowError, "context window"),
        (400, None, errors.BadRequestError, "rejected the request"),
    ],
)
async def test_client_errors_are_not_retried(
    server: ScriptedOpenAIServer, status: int, code: str | None, error: type, message: str
) -> None:
    server.queue(Reply(status=status, error_code=code, error_message="scripted"))
    with pytest.raises(error, match=message):
        await backend_for(server).complete(REQUEST)
    assert len(server.requests) == 1


async def test_429_and_5xx_are_retried_with_backoff(server: ScriptedOpenAIServer) -> None:
    server.queue(Reply(status=429), Reply(status=503), Reply.text("finally"))
    result = await backend_for(server, max_retries=2).complete(REQUEST)
    assert result.text == "finally"
    assert len(server.requests) == 3
    assert server.headers[-1]["x-stainless-retry-count"] == "2"


async def test_persistent_429_and_500_are_reported(server: ScriptedOpenAIServer) -> None:
    server.queue(*[Reply(status=429)] * 2)
    with pytest.raises(errors.RateLimitError, match="after 1 retries"):
        await backend_for(server, max_retries=1).complete(REQUEST)
    server.queue(*[Reply(status=500)] * 2)
    with pytest.raises(errors.UpstreamServerError, match="HTTP 500"):
        await backend_for(server, max_retries=1).complete(REQUEST)
    assert len(server.requests) == 4


async def test_a_stream_broken_midway_is_reported_not_replayed(
    server: ScriptedOpenAIServer,
) -> None:
    server.queue(Reply(chunks=["one", " two", " three", " four"], break_after=2))
    seen: list[str] = []
    with pytest.raises(errors.StreamInterruptedError, match="after output began"):
        async for event in backend_for(server).stream(REQUEST):
            if isinstance(event, TextDelta) and event.text:
                seen.append(event.text)
    assert seen == ["one", " two"][: len(seen)] and seen
    assert len(server.requests) == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_endpoint() -> None:
    backend = OpenAIBackend(
        "down", "m", base_url=f"http://127.0.0.1:{_free_port()}/v1", max_retries=1, timeout_s=2
    )
    assert not backend.readiness().ready
    assert "endpoint unreachable" in backend.readiness().reason
    with pytest.raises(errors.EndpointUnreachableError, match="cannot reach down"):
        await backend.complete(REQUEST)


def test_missing_key_is_reported_by_readiness() -> None:
    backend = OpenAIBackend("chatgpt", "gpt-4o-mini", api_key_env="OPENAI_API_KEY")
    readiness = backend.readiness()
    assert not readiness.ready
    assert readiness.reason == "missing key: set OPENAI_API_KEY in the environment"
    with pytest.raises(errors.ModelNotReadyError, match="set OPENAI_API_KEY"):
        backend.complete_sync(REQUEST)


def test_sync_calls_work_repeatedly(server: ScriptedOpenAIServer) -> None:
    backend = backend_for(server)
    server.queue("one", "two")
    assert backend.complete_sync(REQUEST).text == "one"
    assert backend.complete_sync(REQUEST).text == "two"  # a fresh loop, a fresh client
