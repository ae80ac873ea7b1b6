"""Shared pieces of the gateway tests: duet.toml from dicts, a running gateway, a recording
TCP forwarder and an OpenAI stand-in that also answers ``/embeddings``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Self

import httpx
import openai

from llmduet.config import load_settings
from llmduet.gateway.app import create_gateway_app
from llmduet.gateway.audit import AuditRecord
from llmduet.gateway.service import Gateway
from llmduet.testing import LiveServer, ScriptedOpenAIServer

#: Client keys of every test gateway: name -> (secret, team).
KEYS: dict[str, tuple[str, str | None]] = {
    "alice": ("sk-alice-secret", "eng"),
    "bob": ("sk-bob-secret", "ops"),
    "dave": ("sk-dave-secret", "eng"),
}
ALICE = KEYS["alice"][0]
BOB = KEYS["bob"][0]
DAVE = KEYS["dave"][0]

#: Settings that keep tests fast and deterministic unless a test overrides them.
FAST: dict[str, Any] = {"audit_url": "audit.db", "health_interval_s": 0, "backoff_s": 0.01}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---- duet.toml ---------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def toml_table(name: str, values: Mapping[str, Any]) -> str:
    lines = [f"[{name}]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in values.items() if value is not None]
    return "\n".join(lines) + "\n"


def url_of(where: ScriptedOpenAIServer | str) -> str:
    return where if isinstance(where, str) else where.base_url


def upstream(
    *where: ScriptedOpenAIServer | str, model: str = "m", location: str | None = None, **extra: Any
) -> dict[str, Any]:
    """An ``[gateway.upstreams.NAME]`` table: one base URL per replica."""
    return {"base_urls": [url_of(w) for w in where], "model": model, "location": location, **extra}


def external(*where: ScriptedOpenAIServer | str, **extra: Any) -> dict[str, Any]:
    return upstream(*where, location="external", **extra)


def write_config(
    upstreams: Mapping[str, Mapping[str, Any]],
    routes: Mapping[str, Mapping[str, Any]],
    *,
    teams: Mapping[str, Mapping[str, Any]] | None = None,
    keys: Mapping[str, Mapping[str, Any]] | None = None,
    gateway: Mapping[str, Any] | None = None,
    extra: str = "",
    path: str = "duet.toml",
) -> Path:
    """Write duet.toml with the FAST settings, the standard keys and their teams; ``teams``
    and ``keys`` add or override fields (budgets) of those entries."""
    team_specs: dict[str, dict[str, Any]] = {t: {} for _, t in KEYS.values() if t}
    for name, spec in (teams or {}).items():
        team_specs.setdefault(name, {}).update(spec)
    key_specs: dict[str, dict[str, Any]] = {
        name: {"key_sha256": sha256(secret), "team": team} for name, (secret, team) in KEYS.items()
    }
    for name, spec in (keys or {}).items():
        key_specs.setdefault(name, {}).update(spec)
    parts = [toml_table("gateway", {**FAST, **(gateway or {})})]
    parts += [toml_table(f"gateway.upstreams.{n}", s) for n, s in upstreams.items()]
    parts += [toml_table(f"gateway.routes.{n}", s) for n, s in routes.items()]
    parts += [toml_table(f"gateway.teams.{n}", s) for n, s in team_specs.items()]
    parts += [toml_table(f"gateway.keys.{n}", s) for n, s in key_specs.items()]
    file = Path(path)
    file.write_text("\n".join(parts) + extra, encoding="utf-8")
    return file


# ---- a running gateway ---------------------------------------------------------------------


@dataclass
class Running:
    gateway: Gateway
    server: LiveServer
    http: httpx.Client

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, key: str = ALICE, **options: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=0, **options)

    def post(
        self, path: str, body: Any, *, key: str | None = ALICE, **options: Any
    ) -> httpx.Response:
        headers = dict(options.pop("headers", None) or {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return self.http.post(self.base_url + path, json=body, headers=headers, **options)

    def chat(self, content: str = "Hello", *, route: str = "r", **options: Any) -> httpx.Response:
        body = {"model": route, "messages": [{"role": "user", "content": content}]}
        body.update(options.pop("body", None) or {})
        return self.post("/chat/completions", body, **options)

    def stream_events(
        self, content: str = "Hello", *, route: str = "r", **options: Any
    ) -> list[bytes]:
        """The ``data:`` payloads of a streamed chat reply, in order."""
        body = {"model": route, "stream": True, "messages": [{"role": "user", "content": content}]}
        body.update(options.pop("body", None) or {})
        headers = {"Authorization": f"Bearer {options.pop('key', ALICE)}"}
        headers.update(options.pop("headers", None) or {})
        events: list[bytes] = []
        with self.http.stream(
            "POST", self.base_url + "/chat/completions", json=body, headers=headers
        ) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("data:"):
                    events.append(line[5:].strip().encode())
        return events

    def records(self) -> list[AuditRecord]:
        self.gateway.audit.flush()
        return self.gateway.audit.records()

    def last(self) -> AuditRecord:
        return self.records()[-1]


@contextlib.contextmanager
def running(path: str = "duet.toml") -> Iterator[Running]:
    gateway = Gateway(load_settings(path))
    with (
        LiveServer(create_gateway_app(gateway)) as server,
        httpx.Client(timeout=30) as http,
    ):
        yield Running(gateway, server, http)


@contextlib.contextmanager
def gateway_for(
    upstreams: Mapping[str, Mapping[str, Any]],
    routes: Mapping[str, Mapping[str, Any]],
    **options: Any,
) -> Iterator[Running]:
    write_config(upstreams, routes, **options)
    with running() as run:
        yield run


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connect is refused)."""
    return f"http://127.0.0.1:{free_port()}/v1"


def content_of(events: list[bytes]) -> str:
    text = ""
    for payload in events:
        if payload == b"[DONE]":
            continue
        chunk = json.loads(payload)
        for choice in chunk.get("choices") or []:
            text += (choice.get("delta") or {}).get("content") or ""
    return text


# ---- a recording TCP forwarder ----------------------------------------------------------


class TcpRecorder:
    """Forwards 127.0.0.1:port to a target port and records every byte that clients send
    through it (the gateway's side). ``stop()`` closes the listener and every open
    connection, so the target looks dead at once (keep-alive connections included)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self._sent = bytearray()
        self._sockets: list[socket.socket] = []
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def sent(self) -> bytes:
        """Everything the clients have sent so far."""
        with self._lock:
            return bytes(self._sent)

    def sent_count(self) -> int:
        with self._lock:
            return len(self._sent)

    def start(self) -> TcpRecorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> TcpRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                target = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            for sock in (client, target):  # forward each write at once, as a router does
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, target]
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, target, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(target, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        try:
            while data := source.recv(65536):
                if record:
                    with self._lock:
                        self._sent += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


# ---- scripted upstreams ------------------------------------------------------------------


class Scripted(ScriptedOpenAIServer):
    """A :class:`ScriptedOpenAIServer` that stops in milliseconds: ``serve_forever`` polls
    for shutdown every 10 ms instead of every 0.5 s (tests start and stop hundreds)."""

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def __enter__(self) -> Self:
        return self.start()


class EmbeddingServer(Scripted):
    """A :class:`ScriptedOpenAIServer` that also answers ``POST /embeddings`` (200, one
    vector of ``dims`` numbers per input, usage counted as one token per input word)."""

    def __init__(self, dims: int = 4, **options: Any) -> None:
        super().__init__(**options)
        owner = self
        scripted: type[BaseHTTPRequestHandler] = self._httpd.RequestHandlerClass  # type: ignore[assignment]

        class Handler(scripted):  # type: ignore[misc, valid-type]
            def do_POST(self) -> None:
                if not self.path.rstrip("/").endswith("/embeddings"):
                    super().do_POST()
                    return
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with owner._lock:
                    owner.requests.append(body)
                    owner.headers.append({k.lower(): v for k, v in self.headers.items()})
                raw = body.get("input")
                inputs = [raw] if isinstance(raw, str) else list(raw or [])
                if inputs and all(isinstance(i, int) for i in inputs):
                    inputs = [inputs]  # one tokenised input
                data = [
                    {
                        "object": "embedding",
                        "index": i,
                        "embedding": [float(i + 1)] + [0.5] * (dims - 1),
                    }
                    for i in range(len(inputs))
                ]
                words = sum(len(str(i).split()) for i in inputs)
                payload = json.dumps(
                    {
                        "object": "list",
                        "data": data,
                        "model": body.get("model"),
                        "usage": {"prompt_tokens": words, "total_tokens": words},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._httpd.RequestHandlerClass = Handler
