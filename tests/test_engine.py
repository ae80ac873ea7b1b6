"""The continuous-batching engine on the real bundled model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from llmduet.engine.batch import BatchEngine, GenerationRequest, QueueFullError
from llmduet.engine.chat import ChatFormatter
from llmduet.engine.model import GGUFModel
from llmduet.engine.sampling import SamplingParams
from llmduet.engine.structured import schema_grammar
from llmduet.errors import ContextWindowError
from llmduet.models.llamacpp import bundled_model_path

pytestmark = pytest.mark.model

GREEDY = SamplingParams(temperature=0.0)
#: At least 400 integers: an output that cannot end by itself for many seconds.
ENDLESS = SamplingParams(
    temperature=0.0,
    grammar=schema_grammar({"type": "array", "items": {"type": "integer"}, "minItems": 400}),
)
PROMPTS = [
    "Why is the sky blue?",
    "Write a haiku about the sea.",
    "Name three fruits.",
    "What does a CPU do?",
]


@pytest.fixture(scope="module")
def weights() -> Iterator[GGUFModel]:
    model = GGUFModel(bundled_model_path())
    yield model
    model.close()


@pytest.fixture
def engine(weights: GGUFModel) -> Iterator[BatchEngine]:
    running = BatchEngine(weights, max_sequences=4, context_per_sequence=512, max_queue=8)
    yield running
    running.close()


def tokens(weights: GGUFModel, prompt: str) -> list[int]:
    return ChatFormatter(weights).prompt_tokens([{"role": "user", "content": prompt}])


async def collect(engine: BatchEngine, request: GenerationRequest) -> tuple[str, str, int]:
    text, finish, count = "", "", 0
    async for event in engine.generate(request):
        text += event.text
        if event.finish:
            finish, count = event.finish, event.completion_tokens
    return text, finish, count


async def test_concurrent_requests_all_finish_and_match_their_solo_runs(
    engine: BatchEngine, weights: GGUFModel
) -> None:
    requests = [GenerationRequest(tokens(weights, p), 24, GREEDY) for p in PROMPTS]
    solo = [await collect(engine, request) for request in requests]
    together = await asyncio.gather(*(collect(engine, request) for request in requests))
    assert all(text for text, _, _ in together)
    assert [text for text, _, _ in together] == [text for text, _, _ in solo]
    assert all(count <= 24 for _, _, count in together)
    assert engine.active == 0 and engine.waiting == 0


async def test_more_requests_than_sequences_queue_and_all_complete(
    engine: BatchEngine, weights: GGUFModel
) -> None:
    requests = [GenerationRequest(tokens(weights, PROMPTS[i % 4]), 8, GREEDY) for i in range(8)]
    results = await asyncio.gather(*(collect(engine, request) for request in requests))
    assert len(results) == 8 and all(text for text, _, _ in results)


async def test_leaving_a_stream_cancels_it_and_frees_its_slot(
    engine: BatchEngine, weights: GGUFModel
) -> None:
    request = GenerationRequest(tokens(weights, "List numbers."), 400, ENDLESS)
    stream = engine.generate(request)
    seen = 0
    async for event in stream:
        seen += bool(event.text)
        if seen == 2:
            break
    await stream.aclose()
    for _ in range(300):  # the output itself would run for many seconds more
        if engine.active == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.active == 0


async def test_a_request_times_out_while_it_waits(weights: GGUFModel) -> None:
    engine = BatchEngine(weights, max_sequences=1, context_per_sequence=256, max_queue=4)
    try:
        running = asyncio.create_task(
            collect(engine, GenerationRequest(tokens(weights, "List numbers."), 200, ENDLESS))
        )
        while engine.active == 0:
            await asyncio.sleep(0.01)
        waiting = GenerationRequest(tokens(weights, "Hi."), 8, GREEDY, timeout_s=0.2)
        _, finish, count = await collect(engine, waiting)
        assert (finish, count) == ("timeout", 0)
        assert not running.done()  # it timed out in the queue, not after its turn came
        await running
    finally:
        engine.close()


async def test_timeout_ends_the_request(engine: BatchEngine, weights: GGUFModel) -> None:
    request = GenerationRequest(
        tokens(weights, "Tell me a long story."), 400, GREEDY, timeout_s=0.2
    )
    _, finish, count = await collect(engine, request)
    assert finish == "timeout" and count < 400


def test_full_queue_is_refused(weights: GGUFModel) -> None:
    engine = BatchEngine(weights, max_sequences=1, context_per_sequence=256, max_queue=1)
    done = threading.Event()
    try:
        request = GenerationRequest(tokens(weights, "Tell me a long story."), 200, GREEDY)
        first = engine.submit(request, lambda e: done.set() if e.finish else None)
        deadline = time.time() + 10
        while engine.active == 0 and time.time() < deadline:
            time.sleep(0.005)
        engine.submit(request, lambda e: None)  # waits in the queue
        with pytest.raises(QueueFullError, match="already waiting"):
            engine.submit(request, lambda e: None)
        first.cancel()
        assert done.wait(10)
    finally:
        engine.close()


def test_prompt_plus_max_tokens_over_the_window(engine: BatchEngine, weights: GGUFModel) -> None:
    with pytest.raises(ContextWindowError, match="context window is 512 tokens"):
        engine.submit(GenerationRequest(tokens(weights, "hi"), 600, GREEDY), lambda e: None)


def test_close_ends_running_streams_cleanly(weights: GGUFModel) -> None:
    engine = BatchEngine(weights, max_sequences=2, context_per_sequence=512)
    finishes: list[str] = []
    got = threading.Event()

    def sink(event: object) -> None:
        if getattr(event, "finish", None):
            finishes.append(event.finish)  # type: ignore[attr-defined]
            got.set()

    engine.submit(GenerationRequest(tokens(weights, "Tell me a long story."), 400, GREEDY), sink)
    time.sleep(0.2)
    engine.close(grace_s=0.0)
    assert got.wait(5)
    assert finishes == ["shutdown"]  # cut by the shutdown, not by its caller
