"""The in-process backend on the real bundled SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmduet import errors
from llmduet.engine.text import StopHoldback
from llmduet.models.llamacpp import LlamaCppBackend, bundled_model_path
from llmduet.models.types import ChatRequest, TextDelta, Usage
from tools import ADD_TOOL

pytestmark = pytest.mark.model


def ask(prompt: str, **options: object) -> ChatRequest:
    return ChatRequest.from_prompt(prompt, **options)  # type: ignore[arg-type]


def test_bundled_model_is_found_without_importing_its_package() -> None:
    path = bundled_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes()[:4] == b"GGUF"


async def test_streams_deltas_with_exact_usage(llama: LlamaCppBackend) -> None:
    events = [e async for e in llama.stream(ask("Name three colours.", max_tokens=24, seed=1))]
    deltas = [e for e in events if isinstance(e, TextDelta)]
    usage = [e for e in events if isinstance(e, Usage)]
    assert len(deltas) >= 3
    assert len(usage) == 1
    assert usage[0].prompt_tokens == len(llama.prompt_tokens(ask("Name three colours.")))
    assert 1 <= usage[0].completion_tokens <= 24
    assert [e.t for e in deltas] == sorted(e.t for e in deltas)


async def test_max_tokens_is_respected(llama: LlamaCppBackend) -> None:
    result = await llama.complete(
        ask("Write a long story about a lighthouse.", max_tokens=7, seed=3)
    )
    assert result.usage is not None and result.usage.completion_tokens == 7
    assert result.finish_reason == "length"
    assert result.cost_usd is not None and result.cost_usd > 0


async def test_same_seed_same_text_different_seed_different_text(llama: LlamaCppBackend) -> None:
    request = ask("Tell me a short story.", max_tokens=40, temperature=1.0, seed=42)
    first = await llama.complete(request)
    await llama.complete(ask("Something else entirely.", max_tokens=5))
    second = await llama.complete(request)
    other = await llama.complete(
        ask("Tell me a short story.", max_tokens=40, temperature=1.0, seed=43)
    )
    assert first.text == second.text
    assert first.text != other.text


async def test_stop_sequence_cuts_output_before_it(llama: LlamaCppBackend) -> None:
    base = ask("List the days of the week.", max_tokens=48, seed=5, temperature=0.0)
    full = (await llama.complete(base)).text
    words = full.split()
    assert len(words) > 4, full
    stop = words[3]
    cut = await llama.complete(
        ask("List the days of the week.", max_tokens=48, seed=5, temperature=0.0, stop=[stop])
    )
    assert cut.finish_reason == "stop"
    assert stop not in cut.text
    assert full.startswith(cut.text)
    assert cut.text == full[: full.index(stop)]


async def test_context_overflow_is_a_clear_error() -> None:
    small = LlamaCppBackend("tiny", n_ctx=64, threads=2)
    with pytest.raises(errors.ContextWindowError, match="context window is 64"):
        await small.complete(ask("word " * 200))


NOW_TOOL = {"type": "function", "function": {"name": "now", "description": "Current time."}}


async def test_required_tool_call_is_valid_for_the_declared_parameters(
    llama: LlamaCppBackend,
) -> None:
    request = ask("What is 2 plus 40?", tools=[ADD_TOOL, NOW_TOOL], tool_choice="required", seed=1)
    result = await llama.complete(request)
    assert result.finish_reason == "tool_calls"
    assert len(result.tool_calls) == 1
    call = result.tool_calls[0]
    assert call.name in {"add", "now"} and call.id.startswith("call_")
    if call.name == "add":
        args = call.parsed_arguments()
        assert set(args) == {"a", "b"} and all(isinstance(v, int) for v in args.values())


async def test_named_tool_choice_forces_that_tool(llama: LlamaCppBackend) -> None:
    choice = {"type": "function", "function": {"name": "add"}}
    result = await llama.complete(ask("Hi there!", tools=[ADD_TOOL, NOW_TOOL], tool_choice=choice))
    assert [c.name for c in result.tool_calls] == ["add"]
    assert set(result.tool_calls[0].parsed_arguments()) == {"a", "b"}
    assert result.text == ""


async def test_tool_results_are_accepted_back(llama: LlamaCppBackend) -> None:
    messages = [
        {"role": "user", "content": "What is 2 plus 40?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 2, "b": 40}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    request = ChatRequest(messages=messages, tools=[ADD_TOOL], tool_choice="none", max_tokens=16)
    result = await llama.complete(request)
    assert result.text and not result.tool_calls


async def test_unknown_tool_choice_is_a_bad_request(llama: LlamaCppBackend) -> None:
    choice = {"type": "function", "function": {"name": "missing"}}
    with pytest.raises(errors.BadRequestError, match="'missing', which is not among the tools"):
        await llama.complete(ask("hi", tools=[ADD_TOOL], tool_choice=choice))


async def test_json_schema_output_parses_and_matches(llama: LlamaCppBackend) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}
    for seed in (1, 2, 3):
        result = await llama.complete(
            ask("Describe Paris.", response_format=response_format, seed=seed, max_tokens=80)
        )
        data = json.loads(result.text)
        assert isinstance(data["city"], str) and isinstance(data["population"], int)


async def test_json_object_output_parses(llama: LlamaCppBackend) -> None:
    prompt = 'Reply with a JSON object with the keys "name" and "age" of a dog.'
    for seed in (1, 3):
        result = await llama.complete(
            ask(
                prompt,
                response_format={"type": "json_object"},
                max_tokens=120,
                seed=seed,
                temperature=0.2,
            )
        )
        assert result.finish_reason == "stop", result.text
        assert isinstance(json.loads(result.text), dict)


async def test_invalid_schema_is_a_bad_request(llama: LlamaCppBackend) -> None:
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "potato"}}}
    with pytest.raises(errors.BadRequestError, match="invalid JSON schema"):
        await llama.complete(ask("hi", response_format=bad))


def test_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a model")
    backend = LlamaCppBackend("fake", fake)
    assert not backend.readiness().ready
    assert "is not a GGUF model file" in backend.readiness().reason
    with pytest.raises(errors.InvalidModelFileError, match="is not a GGUF"):
        backend.complete_sync(ask("hi"))


def test_a_missing_file(tmp_path: Path) -> None:
    backend = LlamaCppBackend("gone", tmp_path / "missing.gguf")
    assert "not found" in backend.readiness().reason


def test_a_truncated_gguf(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(bundled_model_path().read_bytes()[:4096])
    with pytest.raises(errors.InvalidModelFileError, match="could not load"):
        LlamaCppBackend("broken", broken, threads=1).complete_sync(ask("hi"))


@pytest.mark.parametrize(
    ("pieces", "stops", "expected"),
    [
        (["Hello", " wor", "ld"], ["world"], ("Hello ", True)),
        (["ab", "c"], ["cd"], ("abc", False)),
        (["xEN", "D"], ["END"], ("x", True)),
        (["plain", " text"], [], ("plain text", False)),
    ],
)
def test_stop_holdback(pieces: list[str], stops: list[str], expected: tuple[str, bool]) -> None:
    holdback = StopHoldback(stops)
    emitted, hit = "", False
    for piece in pieces:
        text, hit = holdback.push(piece)
        emitted += text
        if hit:
            break
    if not hit:
        emitted += holdback.flush()
    assert (emitted, hit) == expected


async def test_unloading_from_two_threads_at_once_frees_the_model_once() -> None:
    import asyncio
    import threading

    # Its own model (other settings than the shared fixture's), as a server shuts down:
    # the HTTP layer and the app's lifespan both unload while a stream still runs.
    backend = LlamaCppBackend("twice", n_ctx=512, threads=1)
    endless = {
        "type": "json_schema",
        "json_schema": {
            "name": "numbers",
            "schema": {"type": "array", "items": {"type": "integer"}, "minItems": 200},
        },
    }
    running = asyncio.create_task(
        backend.complete(ask("List numbers.", max_tokens=400, response_format=endless))
    )
    while backend.engine_stats()[0] == 0:
        await asyncio.sleep(0.01)
    unloads = [threading.Thread(target=backend.unload, args=(0.2,)) for _ in range(2)]
    for thread in unloads:
        thread.start()
    for thread in unloads:
        await asyncio.to_thread(thread.join)
    with pytest.raises(errors.BackendError, match="shutting down"):
        await running
    assert backend.engine_stats() == (0, 0)
