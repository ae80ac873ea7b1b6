"""uvicorn, taught to end in-flight streams cleanly on shutdown.

uvicorn alone waits ``timeout_graceful_shutdown`` for open responses and then cancels
them: a client sees its stream stop mid-sentence, with no error and no ``[DONE]``. Here
the engines are closed alongside: running streams get ``shutdown_grace_s`` to finish,
then each one still running ends with an OpenAI-shaped error frame (``shutting_down``)
and ``[DONE]``, so clients can tell a cut stream from a complete one.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn


class GracefulServer(uvicorn.Server):
    def __init__(self, app: Any, **options: Any) -> None:
        grace = float(getattr(getattr(app, "state", None), "shutdown_grace_s", 0.0))
        # uvicorn must outwait the engines' grace, or it cancels the streams first.
        options.setdefault("timeout_graceful_shutdown", int(grace) + 5)
        super().__init__(uvicorn.Config(app, **options))
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        close_engines = getattr(getattr(self._app, "state", None), "close_engines", None)
        if close_engines is None:
            await super().shutdown(sockets)
            return
        ending = asyncio.create_task(asyncio.to_thread(close_engines))
        await super().shutdown(sockets)
        await ending
