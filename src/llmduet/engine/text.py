"""Token bytes to text: UTF-8 safe, holding back what may begin a stop sequence."""

from __future__ import annotations

import codecs


class StopHoldback:
    """Emits text as it grows, holding back any tail that could begin a stop sequence."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [stop for stop in stops if stop]
        self.pending = ""

    def push(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop sequence was hit)."""
        if not self.stops:
            return text, False
        buffer = self.pending + text
        hits = [buffer.find(stop) for stop in self.stops if stop in buffer]
        if hits:
            self.pending = ""
            return buffer[: min(hits)], True
        keep = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(buffer)), keep, -1):
                if buffer.endswith(stop[:size]):
                    keep = size
                    break
        self.pending = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return text


class TextStream:
    """Feeds token bytes in, gets text out; ``stopped`` once a stop sequence appears."""

    def __init__(self, stops: list[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._holdback = StopHoldback(stops)
        self.stopped = False

    def push(self, data: bytes) -> str:
        text, self.stopped = self._holdback.push(self._decoder.decode(data))
        return text

    def finish(self) -> str:
        """What is left once generation ends without a stop sequence."""
        if self.stopped:
            return ""
        return (
            self._holdback.push(self._decoder.decode(b"", final=True))[0] + self._holdback.flush()
        )
