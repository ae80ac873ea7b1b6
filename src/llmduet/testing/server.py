"""A scripted OpenAI-compatible HTTP server on a real socket.

It answers ``/v1/chat/completions`` exactly as the OpenAI API shapes its replies:
SSE chunks with a role chunk first, content and tool-call fragments, a finish chunk, a
usage chunk (``choices: []``) when ``stream_options.include_usage`` is set, then
``data: [DONE]``; errors as ``{"error": {message, type, param, code}}``. A reply with
``break_after`` drops the connection mid-body, the way a broken network does.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from llmduet.testing.scripted import Reply

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
}


class ScriptedOpenAIServer:
    """Use as a context manager; ``base_url`` is ``http://127.0.0.1:PORT/v1``.

    ``queue()`` scripts the next replies; ``requests`` records each request body and
    headers; when the queue is empty, ``default`` answers.
    """

    def __init__(self, replies: list[Reply | str] | None = None, default: Reply | None = None):
        self.replies: deque[Reply] = deque()
        self.default = default or Reply.text("Hello from the scripted server.")
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self.queue(*(replies or []))
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def queue(self, *replies: Reply | str) -> None:
        with self._lock:
            self.replies.extend(Reply.text(r) if isinstance(r, str) else r for r in replies)

    def next_reply(self) -> Reply:
        with self._lock:
            return self.replies.popleft() if self.replies else self.default

    def start(self) -> ScriptedOpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ScriptedOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _make_handler(server: ScriptedOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        scripted = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    scripted: ScriptedOpenAIServer

    def setup(self) -> None:
        super().setup()
        # Send each chunk at once, as real servers do, so scripted timings show on the wire.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._error(400, "body is not JSON")
            return
        with self.scripted._lock:
            self.scripted.requests.append(body)
            self.scripted.headers.append({k.lower(): v for k, v in self.headers.items()})
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._error(404, f"no route {self.path}")
            return
        reply = self.scripted.next_reply()
        if reply.first_delay_s:
            time.sleep(reply.first_delay_s)
        if reply.status != 200:
            self._error(reply.status, reply.error_message, reply.error_code, reply.retry_after_ms)
        elif body.get("stream"):
            self._stream(body, reply)
        else:
            self._json(200, _completion(body, reply))

    def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(
        self, status: int, message: str, code: str | None = None, retry_ms: int | None = None
    ) -> None:
        headers = {"retry-after-ms": str(retry_ms)} if retry_ms is not None else {}
        error = {
            "message": message,
            "type": _ERROR_TYPES.get(status, "server_error"),
            "param": None,
            "code": code,
        }
        self._json(status, {"error": error}, headers)

    def _stream(self, body: dict[str, Any], reply: Reply) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        for position, chunk in enumerate(_chunks(body, reply, include_usage)):
            if reply.break_after is not None and position > reply.break_after:
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)  # mid-body: the client sees a broken stream
                return
            if position > 1 and reply.chunk_delay_s:
                time.sleep(reply.chunk_delay_s)
            self._write_chunk(f"data: {json.dumps(chunk)}\n\n".encode())
        self._write_chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _envelope(body: dict[str, Any], obj: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-scripted",
        "object": obj,
        "created": int(time.time()),
        "model": body.get("model", "scripted"),
        "system_fingerprint": "fp_scripted",
    }


def _usage(reply: Reply) -> dict[str, int]:
    out = reply.output_tokens
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": out,
        "total_tokens": reply.prompt_tokens + out,
    }


def _chunks(body: dict[str, Any], reply: Reply, include_usage: bool) -> list[dict[str, Any]]:
    """The SSE payloads ChatGPT sends for this reply, in order."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**_envelope(body, "chat.completion.chunk"), "choices": [choice]}

    chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
    chunks += [chunk({"content": text}) for text in reply.chunks]
    for index, call in enumerate(reply.tool_calls):
        head = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        chunks.append(chunk({"tool_calls": [head]}))
        middle = max(1, len(call.arguments) // 2)
        for part in (call.arguments[:middle], call.arguments[middle:]):
            if part:
                chunks.append(
                    chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
                )
    chunks.append(chunk({}, reply.finish))
    if include_usage:
        chunks.append(
            {**_envelope(body, "chat.completion.chunk"), "choices": [], "usage": _usage(reply)}
        )
    return chunks


def _completion(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(reply.chunks) or None,
        "refusal": None,
    }
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in reply.tool_calls
        ]
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish}
    return {**_envelope(body, "chat.completion"), "choices": [choice], "usage": _usage(reply)}
