"""Upstreams that misbehave in ways real ones do: error bodies of other shapes, integer
error codes, odd stream JSON, negative usage, streams that end without ``[DONE]``. None of
them may become a 500, leak a replica slot or lose the audit row."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gateway_helpers import Scripted, gateway_for, upstream, write_config
from llmduet.config import load_settings
from llmduet.errors import ConfigError
from llmduet.gateway.service import Caller, Gateway
from llmduet.testing import ScriptedOpenAIServer
from llmduet.testing.scripted import Reply

Canned = tuple[int, str, bytes | list[bytes]]  # status, content type, body or SSE events


class CannedUpstream:
    """Answers each POST with the next canned reply: a body, or SSE events one by one."""

    def __init__(self, *replies: Canned) -> None:
        self.replies: deque[Canned] = deque(replies)
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._send(200, "application/json", b'{"object": "list", "data": []}')

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                owner.requests += 1
                status, kind, body = owner.replies.popleft()
                if isinstance(body, list):
                    self.send_response(status)
                    self.send_header("content-type", kind)
                    self.send_header("connection", "close")
                    self.end_headers()
                    for event in body:
                        self.wfile.write(event)
                        self.wfile.flush()
                    self.close_connection = True
                else:
                    self._send(status, kind, body)

            def _send(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> CannedUpstream:
        kwargs = {"poll_interval": 0.01}
        threading.Thread(target=self._httpd.serve_forever, kwargs=kwargs, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def sse(*chunks: Any) -> list[bytes]:
    return [
        b"data: " + (c if isinstance(c, bytes) else json.dumps(c).encode()) + b"\n\n"
        for c in chunks
    ]


def content(text: str, finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
    return {"id": "x", "object": "chat.completion.chunk", "choices": [choice]}


@pytest.fixture
def spare() -> Iterator[ScriptedOpenAIServer]:
    with Scripted() as running:
        yield running


def two(odd: CannedUpstream, spare: ScriptedOpenAIServer) -> Any:
    return gateway_for(
        {"odd": upstream(odd.base_url), "spare": upstream(spare)},
        {"r": {"targets": ["odd", "spare"]}},
    )


def outstanding(gw: Any) -> int:
    return sum(r.outstanding for u in gw.gateway.upstreams.values() for r in u.replicas)


@pytest.mark.parametrize(
    "body",
    [b'{"detail": "Not Found"}', b'{"object": "error", "message": "busy"}', b"<html>busy</html>"],
)
def test_a_5xx_of_any_shape_fails_over(body: bytes, spare: ScriptedOpenAIServer) -> None:
    with CannedUpstream(*[(503, "application/json", body)] * 3) as odd, two(odd, spare) as gw:
        response = gw.chat("hi")
        row = gw.last()
        assert response.status_code == 200, response.text
        assert (odd.requests, len(spare.requests)) == (3, 1)
        assert (row.status, row.target, row.attempts) == (200, "spare", 4)
        assert outstanding(gw) == 0


def test_an_integer_error_code_passes_through_as_a_4xx(spare: ScriptedOpenAIServer) -> None:
    error = {"error": {"message": "context too long", "type": "invalid_request_error",
                       "param": 3, "code": 400}}  # fmt: skip
    with (
        CannedUpstream((400, "application/json", json.dumps(error).encode())) as odd,
        two(odd, spare) as gw,
    ):
        response = gw.chat("hi")
        assert response.status_code == 400, response.text
        assert response.json()["error"] == {
            "message": "context too long",
            "type": "invalid_request_error",
            "param": "3",
            "code": "400",
        }
        assert spare.requests == [] and outstanding(gw) == 0


@pytest.mark.parametrize("first", [b"<html>not json</html>", b"[1, 2]", b'{"error": "busy"}'])
def test_a_broken_stream_before_the_first_token_fails_over(
    first: bytes, spare: ScriptedOpenAIServer
) -> None:
    odd_events = sse(first, content("never seen"), b"[DONE]")
    with (
        CannedUpstream(*[(200, "text/event-stream", odd_events)] * 3) as odd,
        two(odd, spare) as gw,
    ):
        events = gw.stream_events("hi")
        assert events[-1] == b"[DONE]" and len(spare.requests) == 1
        assert b"never seen" not in b"".join(events)
        assert outstanding(gw) == 0


def test_chunks_of_unknown_shape_without_output_are_an_empty_reply(
    spare: ScriptedOpenAIServer,
) -> None:
    odd_events = sse({"choices": ["not a choice"]}, {"choices": [{"delta": "nope"}]}, b"[DONE]")
    with CannedUpstream((200, "text/event-stream", odd_events)) as odd, two(odd, spare) as gw:
        events = gw.stream_events("hi")
        assert events[-1] == b"[DONE]" and spare.requests == [] and gw.last().status == 200


def test_odd_stream_json_after_the_first_token_ends_with_an_error_event(
    spare: ScriptedOpenAIServer,
) -> None:
    events_out = sse(content("Hel"), {"choices": [42, {"delta": ["odd"]}]}, content("lo"))
    with CannedUpstream((200, "text/event-stream", events_out)) as odd, two(odd, spare) as gw:
        events = gw.stream_events("hi")
        row = gw.last()
    error = json.loads(events[-2])["error"]
    assert error["code"] == "upstream_stream_interrupted" and events[-1] == b"[DONE]"
    assert spare.requests == []
    assert (row.status, row.error) == (502, "upstream_stream_interrupted")


def test_a_finished_stream_without_done_is_complete(spare: ScriptedOpenAIServer) -> None:
    with (
        CannedUpstream((200, "text/event-stream", sse(content("Hi"), content("!", "stop")))) as odd,
        two(odd, spare) as gw,
    ):
        events = gw.stream_events("hi")
        row = gw.last()
    assert events[-1] == b"[DONE]" and all(b'"error"' not in e for e in events)
    assert (row.status, row.error) == (200, None)


def test_a_stream_cut_before_it_finished_is_an_error(spare: ScriptedOpenAIServer) -> None:
    with (
        CannedUpstream((200, "text/event-stream", sse(content("Hi")))) as odd,
        two(odd, spare) as gw,
    ):
        events = gw.stream_events("hi")
    assert json.loads(events[-2])["error"]["code"] == "upstream_stream_interrupted"


def test_nonsense_usage_is_not_a_500(spare: ScriptedOpenAIServer) -> None:
    reply = {"id": "x", "object": "chat.completion",
             "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
             "usage": {"prompt_tokens": -5, "completion_tokens": [1]}}  # fmt: skip
    with (
        CannedUpstream((200, "application/json", json.dumps(reply).encode())) as odd,
        two(odd, spare) as gw,
    ):
        response = gw.chat("hello there")
        row = gw.last()
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
    assert row.status == 200 and row.prompt_tokens >= 0 and row.completion_tokens == 0


def test_a_stream_reply_dropped_unread_releases_and_is_audited(
    spare: ScriptedOpenAIServer,
) -> None:
    """In-process use: a caller that never iterates the frames and only closes the reply."""
    write_config({"spare": upstream(spare)}, {"r": {"targets": ["spare"]}})
    spare.queue(Reply(chunks=["a", "b"]))

    async def run() -> tuple[int, Any]:
        async with Gateway(load_settings("duet.toml")) as gateway:
            body = {"model": "r", "stream": True, "messages": [{"role": "user", "content": "x"}]}
            reply = await gateway.chat(body, Caller("alice", "eng"), {})
            reply.close()  # type: ignore[union-attr]
            busy = sum(r.outstanding for r in gateway.upstreams["spare"].replicas)
            gateway.audit.flush()
            return busy, gateway.audit.records()[-1]

    busy, row = asyncio.run(run())
    assert busy == 0 and (row.status, row.error) == (499, "client_disconnected")


def test_a_rule_naming_an_unknown_team_or_an_empty_list_is_refused(
    spare: ScriptedOpenAIServer,
) -> None:
    rule = {"name": "finance-local", "teams": ["fiance"], "targets": ["spare"]}
    write_config({"spare": upstream(spare)}, {"r": {"targets": ["spare"], "rules": [rule]}})
    with pytest.raises(ConfigError, match="unknown team 'fiance'"):
        Gateway(load_settings("duet.toml"))
    rule = {"name": "nothing", "tags": [], "targets": ["spare"]}
    write_config({"spare": upstream(spare)}, {"r": {"targets": ["spare"], "rules": [rule]}})
    with pytest.raises(ConfigError, match="tags"):
        load_settings("duet.toml")
