"""``duet serve`` driven by real clients over real sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from llmduet.embeddings import MiniLMEmbedder
from llmduet.models.llamacpp import bundled_model_path
from llmduet.models.openai import OpenAIBackend
from llmduet.models.types import ChatRequest
from llmduet.serve import ServeConfig, create_app
from llmduet.testing import LiveServer
from tools import ADD_TOOL

pytestmark = pytest.mark.model

HI = [{"role": "user", "content": "Say hello."}]


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/health").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("server never became healthy")


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    app = create_app(
        ServeConfig(max_concurrency=4, queue=16, context=1024, threads=2, max_body_bytes=64 * 1024)
    )
    with LiveServer(app) as running:
        wait_ready(running.url)
        yield running


@pytest.fixture
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def test_chat_non_streaming(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="llama", messages=HI, max_tokens=8, seed=1)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_streaming_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="llama",
        messages=HI,
        max_tokens=12,
        stream=True,
        seed=2,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    usage = [c.usage for c in chunks if c.usage]
    assert text and finishes in (["stop"], ["length"])
    assert len(usage) == 1 and chunks[-1].usage is not None and chunks[-1].choices == []
    assert 0 < usage[0].completion_tokens <= 12
    same = client.chat.completions.create(model="llama", messages=HI, max_tokens=12, seed=2)
    assert same.choices[0].message.content == text  # streamed and not: same output


def test_json_schema_output(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string"}, "count": {"type": "integer"}},
        "required": ["colour", "count"],
    }
    reply = client.chat.completions.create(
        model="llama",
        messages=[{"role": "user", "content": "Pick a colour and a number."}],
        response_format={"type": "json_schema", "json_schema": {"name": "pick", "schema": schema}},
        max_tokens=60,
        seed=3,
    )
    data = json.loads(reply.choices[0].message.content or "")
    assert isinstance(data["colour"], str) and isinstance(data["count"], int)


def test_tools_round_trip(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "What is 2 plus 40?"}]
    first = client.chat.completions.create(
        model="llama",
        messages=messages,
        tools=[ADD_TOOL],
        tool_choice={"type": "function", "function": {"name": "add"}},
        seed=4,
    )
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    args = json.loads(call.function.arguments)
    assert call.function.name == "add" and set(args) == {"a", "b"}
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": str(args["a"] + args["b"])},
    ]
    second = client.chat.completions.create(
        model="llama", messages=messages, tools=[ADD_TOOL], tool_choice="none", max_tokens=16
    )
    assert second.choices[0].message.content and not second.choices[0].message.tool_calls


def test_tool_call_streams_in_openai_shape(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="llama",
        messages=[{"role": "user", "content": "Add 1 and 2."}],
        tools=[ADD_TOOL],
        tool_choice="required",
        stream=True,
        seed=5,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for delta in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += delta.id or ""
            entry["name"] += (delta.function.name or "") if delta.function else ""
            entry["arguments"] += (delta.function.arguments or "") if delta.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert calls[0]["name"] == "add" and calls[0]["id"].startswith("call_")
    assert set(json.loads(calls[0]["arguments"])) == {"a", "b"}


def test_embeddings_float_and_base64(client: openai.OpenAI) -> None:
    texts = ["The cat sat on the mat.", "A feline rested on the rug."]
    floats = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
    assert [d.index for d in floats.data] == [0, 1] and len(floats.data[0].embedding) == 384
    expected = MiniLMEmbedder(threads=1).embed(texts).vectors
    assert np.allclose(np.array([d.embedding for d in floats.data]), expected, atol=1e-4)
    raw = httpx.post(
        f"{client.base_url}embeddings",
        json={"model": "all-MiniLM-L6-v2", "input": texts[0], "encoding_format": "base64"},
    ).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, expected[0], atol=1e-4)
    assert raw["usage"]["prompt_tokens"] > 0


def test_models_health_and_metrics(server: LiveServer, client: openai.OpenAI) -> None:
    assert {m.id for m in client.models.list()} == {"llama", "all-MiniLM-L6-v2"}
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    client.chat.completions.create(model="llama", messages=HI, max_tokens=2)
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "duet_requests_total",
        "duet_time_to_first_token_seconds_bucket",
        "duet_request_duration_seconds_bucket",
        "duet_output_tokens_total",
        "duet_queue_depth",
        "duet_active_sequences",
    ):
        assert name in text
    assert 'duet_requests_total{endpoint="/v1/chat/completions",status="200"}' in text


@pytest.mark.parametrize(
    ("overrides", "error", "code", "fragment"),
    [
        ({"model": "gpt-9"}, openai.NotFoundError, "model_not_found", "does not exist"),
        (
            {"messages": [{"role": "user", "content": "word " * 1500}]},
            openai.BadRequestError,
            "context_length_exceeded",
            "context window",
        ),
        ({"max_tokens": 1020}, openai.BadRequestError, "context_length_exceeded", "max_tokens"),
        ({"max_tokens": 0}, openai.BadRequestError, None, "max_tokens"),
        ({"n": 2}, openai.BadRequestError, None, "only n=1"),
        ({"temperature": 3}, openai.BadRequestError, None, "temperature"),
        (
            {"messages": [{"role": "wizard", "content": "hi"}]},
            openai.BadRequestError,
            None,
            "messages.0",
        ),
        (
            {"tools": [ADD_TOOL], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            openai.BadRequestError,
            None,
            "not among the tools",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "s", "schema": {"type": "potato"}},
                }
            },
            openai.BadRequestError,
            None,
            "invalid JSON schema",
        ),
        (  # converts, but to a grammar llama.cpp cannot compile
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "s", "schema": {"enum": []}},
                }
            },
            openai.BadRequestError,
            None,
            "grammar could not be compiled",
        ),
    ],
)
def test_bad_requests_get_openai_errors(
    client: openai.OpenAI, overrides: dict, error: type, code: str | None, fragment: str
) -> None:
    params = {"model": "llama", "messages": HI, "max_tokens": 4, **overrides}
    with pytest.raises(error) as info:
        client.chat.completions.create(**params)
    assert fragment in info.value.message
    if code:
        assert info.value.code == code


def test_raw_http_sse_framing_and_error_shapes(server: LiveServer) -> None:
    url = f"{server.base_url}/chat/completions"
    body = {"model": "llama", "messages": HI, "max_tokens": 5, "stream": True}
    with httpx.stream("POST", url, json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(response.iter_bytes())
    events = raw.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    for event in events[:-2]:
        assert event.startswith(b"data: {") and b"\n" not in event
        assert json.loads(event[6:])["object"] == "chat.completion.chunk"
    bad_json = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["type"] == "invalid_request_error"
    huge = httpx.post(
        url, json={"model": "llama", "messages": [{"role": "user", "content": "x" * 100_000}]}
    )
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"

    def chunks(total: int) -> Iterator[bytes]:  # no Content-Length: chunked encoding
        yield b'{"model": "llama", "max_tokens": 2, "messages": [{"role": "user", "content": "'
        yield b"x" * total
        yield b'"}]}'

    headers = {"content-type": "application/json"}
    chunked = httpx.post(url, content=chunks(100_000), headers=headers)
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "request_too_large"
    small = httpx.post(url, content=chunks(10), headers=headers)
    assert small.status_code == 200 and small.json()["choices"][0]["message"]["content"]
    missing = httpx.get(f"{server.url}/v1/nothing")
    assert missing.status_code == 404 and "error" in missing.json()
    wrong_method = httpx.get(url)
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_concurrent_streams_neither_interrupt_nor_empty(server: LiveServer) -> None:
    async def one(client: openai.AsyncOpenAI, index: int) -> str:
        stream = await client.chat.completions.create(
            model="llama",
            messages=[{"role": "user", "content": f"Count to {index + 3}."}],
            max_tokens=16,
            stream=True,
            seed=index,
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        try:
            return await asyncio.gather(*(one(client, i) for i in range(8)))
        finally:
            await client.close()

    texts = asyncio.run(main())
    assert len(texts) == 8 and all(texts)


#: A reply that cannot end early: a JSON array of at least 400 integers (over 800 tokens,
#: many seconds of decoding), so only a cancellation can free its slot quickly.
LONG_REPLY = {
    "type": "json_schema",
    "json_schema": {
        "name": "numbers",
        "schema": {"type": "array", "items": {"type": "integer"}, "minItems": 400},
    },
}


def long_stream(**extra: object) -> dict[str, object]:
    return {
        "model": "llama",
        "stream": True,
        "max_tokens": 2000,
        "response_format": LONG_REPLY,
        "messages": [{"role": "user", "content": "List numbers."}],
        **extra,
    }


def test_client_disconnect_frees_the_sequence(server: LiveServer) -> None:
    url = f"{server.base_url}/chat/completions"
    with httpx.stream("POST", url, json=long_stream()) as response:
        for count, _ in enumerate(response.iter_lines()):
            if count >= 6:
                break
    deadline = time.monotonic() + 5  # the reply itself would run for over 10 s more
    active = None
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{server.url}/metrics").text
        active = next(
            line for line in metrics.splitlines() if line.startswith("duet_active_sequences ")
        )
        if active.endswith(" 0.0"):
            break
        time.sleep(0.05)
    assert active is not None and active.endswith(" 0.0")


def test_our_openai_backend_and_langchain_use_it(server: LiveServer) -> None:
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    backend = OpenAIBackend("served", "llama", base_url=server.base_url, location="local")
    result = backend.complete_sync(ChatRequest.from_prompt("Say hi.", max_tokens=6))
    assert result.text and result.usage is not None and result.usage.completion_tokens <= 6
    chat = ChatOpenAI(base_url=server.base_url, api_key="x", model="llama", max_tokens=6)
    assert chat.invoke("Say hi.").content
    assert "".join(str(c.content) for c in chat.stream("Say hi."))
    embeddings = OpenAIEmbeddings(
        base_url=server.base_url,
        api_key="x",
        model="all-MiniLM-L6-v2",
        check_embedding_ctx_length=False,
    )
    assert len(embeddings.embed_query("hello")) == 384


def test_api_keys_are_required_when_set() -> None:
    app = create_app(ServeConfig(api_keys=["sk-right"], max_concurrency=1, context=256))
    with LiveServer(app) as running:
        wait_ready(running.url)
        for key in ("sk-wrong", ""):
            with pytest.raises(openai.AuthenticationError) as info:
                openai.OpenAI(
                    base_url=running.base_url, api_key=key or "-", max_retries=0
                ).models.list()
            assert info.value.code == "invalid_api_key"
        ok = openai.OpenAI(base_url=running.base_url, api_key="sk-right", max_retries=0)
        assert ok.chat.completions.create(model="llama", messages=HI, max_tokens=2).choices
        assert httpx.get(f"{running.url}/health").status_code == 200


def test_full_queue_answers_429_with_retry_after() -> None:
    app = create_app(ServeConfig(max_concurrency=1, queue=0, context=512))
    with LiveServer(app) as running:
        wait_ready(running.url)
        url = f"{running.base_url}/chat/completions"
        long = {
            "model": "llama",
            "stream": True,
            "max_tokens": 300,
            "messages": [{"role": "user", "content": "Tell me a long story."}],
        }
        with httpx.stream("POST", url, json=long) as busy:
            next(busy.iter_lines())
            refused = httpx.post(url, json={"model": "llama", "messages": HI, "max_tokens": 2})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "queue_full"


def stream_lines(url: str, body: dict[str, object], on_first: object) -> list[str]:
    """The SSE lines of one stream, calling ``on_first()`` after the first; a connection
    the server drops ends the list."""
    lines: list[str] = []
    with httpx.stream("POST", url, json=body) as response:
        try:
            for line in response.iter_lines():
                if not line:
                    continue  # the blank line that ends each event
                if not lines:
                    on_first()  # type: ignore[operator]
                lines.append(line)
        except httpx.RemoteProtocolError:
            pass
    return lines


def finish_reasons(lines: list[str]) -> list[str]:
    frames = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    return [
        choice["finish_reason"]
        for frame in frames
        for choice in frame.get("choices", [])
        if choice.get("finish_reason")
    ]


def test_graceful_shutdown_finishes_running_streams() -> None:
    app = create_app(ServeConfig(max_concurrency=2, context=512))
    running = LiveServer(app, graceful_s=30).start()
    wait_ready(running.url)
    body = {
        "model": "llama",
        "stream": True,
        "max_tokens": 40,
        "messages": [{"role": "user", "content": "Tell me a story."}],
    }
    rest = stream_lines(
        f"{running.base_url}/chat/completions",
        body,
        lambda: setattr(running.server, "should_exit", True),
    )
    running.stop()
    assert finish_reasons(rest) in (["stop"], ["length"]) and rest[-1] == "data: [DONE]"


def test_a_stream_cut_by_shutdown_does_not_look_complete() -> None:
    app = create_app(ServeConfig(max_concurrency=1, context=2048, shutdown_grace_s=0.0))
    running = LiveServer(app, graceful_s=1).start()
    wait_ready(running.url)
    lines = stream_lines(
        f"{running.base_url}/chat/completions",
        long_stream(),
        lambda: setattr(running.server, "should_exit", True),
    )
    running.stop()
    assert len(lines) > 2 and finish_reasons(lines) == []  # no chunk claims it finished
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2][6:])["error"]
    assert error["code"] == "shutting_down" and error["type"] == "server_error"


def test_duet_ask_reaches_it_as_a_registered_model(
    server: LiveServer, duet_exe: str, tmp_path: Path
) -> None:
    (tmp_path / "duet.toml").write_text(
        f"[models.served]\nprovider = 'openai'\nmodel = 'llama'\nbase_url = '{server.base_url}'\n"
    )
    proc = subprocess.run(
        [duet_exe, "ask", "Say hi.", "-m", "served", "--json", "--max-tokens", "6"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert row["text"] and row["location"] == "local" and 0 < row["output_tokens"] <= 6
    assert row["cost_usd"] > 0  # priced as self-hosted hardware time


def test_several_models_from_one_server(tmp_path: Path) -> None:
    path = bundled_model_path()
    app = create_app(
        ServeConfig(models={"small": path, "tiny": path}, max_concurrency=2, context=256)
    )
    with LiveServer(app) as running:
        wait_ready(running.url)
        client = openai.OpenAI(base_url=running.base_url, api_key="x", max_retries=0)
        assert {m.id for m in client.models.list()} >= {"small", "tiny"}
        for name in ("small", "tiny"):
            reply = client.chat.completions.create(model=name, messages=HI, max_tokens=3)
            assert reply.model == name and reply.choices[0].message.content


def test_rag_index_embedded_by_the_servers_endpoint(
    server: LiveServer, duet_exe: str, tmp_path: Path
) -> None:
    from llmduet.data import HANDBOOK_DOCS

    def rag(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [duet_exe, "rag", *args, "--index", str(tmp_path / "index")],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )

    ingest = rag(
        "ingest",
        str(HANDBOOK_DOCS / "parental-leave.md"),
        str(HANDBOOK_DOCS / "travel-policy.md"),
        "--embedder",
        "all-MiniLM-L6-v2",
        "--embedder-url",
        server.base_url,
        "--json",
    )
    assert ingest.returncode == 0, ingest.stderr
    assert len(json.loads(ingest.stdout)["ingested"]) == 2
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["embedder"] == f"all-MiniLM-L6-v2@{server.base_url}"
    search = rag("search", "per diem for hotels", "--mode", "dense", "--json", "-k", "1")
    assert search.returncode == 0, search.stderr
    assert json.loads(search.stdout)["source"] == "travel-policy.md"
    mixed = rag("ingest", str(HANDBOOK_DOCS / "sick-leave.md"))
    assert mixed.returncode == 1 and "built with the embedder" in mixed.stderr


def test_default_max_tokens_caps_requests_that_set_none() -> None:
    app = create_app(ServeConfig(max_concurrency=1, context=512, default_max_tokens=3))
    with LiveServer(app) as running:
        wait_ready(running.url)
        client = openai.OpenAI(base_url=running.base_url, api_key="-", max_retries=0)
        capped = client.chat.completions.create(model="llama", messages=HI)
        asked = client.chat.completions.create(model="llama", messages=HI, max_tokens=6)
    assert capped.usage is not None and capped.usage.completion_tokens <= 3
    assert capped.choices[0].finish_reason == "length"
    assert asked.usage is not None and asked.usage.completion_tokens > 3
