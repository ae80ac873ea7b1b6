"""Run an ASGI app under uvicorn on 127.0.0.1 in a background thread (for tests)."""

from __future__ import annotations

import threading
import time
from typing import Any

from llmduet.serve.server import GracefulServer


class LiveServer:
    """``with LiveServer(app) as server: server.base_url`` — an ephemeral port, real sockets."""

    def __init__(self, app: Any, *, graceful_s: int = 5) -> None:
        self.server = GracefulServer(
            app, host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=graceful_s
        )
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self, timeout_s: float = 30.0) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=60)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
