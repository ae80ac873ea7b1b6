"""An append-only, crash-safe record of finished work, so an evaluation resumes.

Each finished piece of work (a case on a model, a judge's verdict) is one JSON line
``{"key": ..., "value": ...}``, flushed and fsynced before the run moves on. The key is a
hash of everything that decides the result (model settings, pipeline, inputs, parameters),
so a changed input is recomputed and an unchanged one is never paid for twice. A line cut
off by a crash is ignored when the file is read back.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any


def cache_key(*parts: Any) -> str:
    """A stable hash of JSON-serialisable parts."""
    text = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class ResultCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    record = json.loads(line)
                    self._values[record["key"]] = record["value"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut off by a crash
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        if self._file.tell() and not path.read_bytes().endswith(b"\n"):
            self._file.write("\n")  # end the line a crash cut off, so ours start clean

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: str) -> Any | None:
        return self._values.get(key)

    def put(self, key: str, value: Any) -> None:
        line = json.dumps({"key": key, "value": value}, ensure_ascii=False, default=str)
        with self._lock:
            self._values[key] = value
            self._file.write(line + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
