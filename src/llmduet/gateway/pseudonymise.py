"""Pseudonymisation: private values out, stable placeholders in, originals back on return.

Before a request leaves for an external model, every detected value is replaced by a
placeholder such as ``<EMAIL_1>``; the same value gets the same placeholder everywhere in
the conversation, so the model can still refer to it. The reply is restored before the
user sees it. Streamed replies are restored as they arrive: a placeholder can be split
across chunks, so text that might be the start of one is held back until it is complete
or clearly is not one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from llmduet.gateway.pii import TYPES, Finding, detect

PLACEHOLDER = re.compile(r"<(" + "|".join(TYPES) + r")_(\d+)>")
_LONGEST = max(len(t) for t in TYPES) + 8  # "<" TYPE "_" digits ">"


#: Keys whose string values are protocol, not content: never inspected or changed.
STRUCTURAL_KEYS = frozenset({"model", "role", "type", "id", "tool_call_id", "object"})


def map_texts(value: Any, change: Callable[[str], str], key: str | None = None) -> Any:
    """A copy of a JSON value with ``change`` applied to every string in it except those
    under :data:`STRUCTURAL_KEYS`. Every field is covered, not a list of known ones:
    messages, names, tool-call arguments, ``user``, ``metadata``, ``prediction``, tool
    descriptions and whatever a newer API adds, so nothing slips out unexamined."""
    if isinstance(value, str):
        return value if key in STRUCTURAL_KEYS else change(value)
    if isinstance(value, dict):
        return {k: map_texts(v, change, k) for k, v in value.items()}
    if isinstance(value, list):
        return [map_texts(item, change, key) for item in value]
    return value


def request_texts(value: Any) -> list[str]:
    """Every string :func:`map_texts` would change, in order."""
    texts: list[str] = []

    def collect(text: str) -> str:
        texts.append(text)
        return text

    map_texts(value, collect)
    return texts


@dataclass(slots=True)
class Pseudonymiser:
    """One per conversation: the value <-> placeholder table lives as long as it does."""

    types: tuple[str, ...] = TYPES
    by_value: dict[str, str] = field(default_factory=dict)
    by_placeholder: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def _placeholder(self, finding: Finding) -> str:
        if finding.value not in self.by_value:
            count = sum(1 for p in self.by_placeholder if p.startswith(f"<{finding.type}_")) + 1
            placeholder = f"<{finding.type}_{count}>"
            self.by_value[finding.value] = placeholder
            self.by_placeholder[placeholder] = finding.value
        return self.by_value[finding.value]

    def learn(self, text: str) -> None:
        """Detect the private values of ``text`` and give each a placeholder."""
        found = detect(text, self.types)
        self.findings += found
        for finding in found:
            self._placeholder(finding)

    def replace_known(self, text: str) -> str:
        """Every value learnt so far, wherever it appears, replaced by its placeholder
        (longest first, so a value inside a longer one cannot split it)."""
        if not self.by_value:
            return text
        pattern = re.compile(
            "|".join(re.escape(value) for value in sorted(self.by_value, key=len, reverse=True))
        )
        return pattern.sub(lambda m: self.by_value[m.group(0)], text)

    def mask(self, text: str) -> str:
        """``text`` with every detected value replaced by its placeholder."""
        self.learn(text)
        return self.replace_known(text)

    def mask_request(self, body: Any) -> Any:
        """A copy of a request (or any JSON value) with every text masked. Values are
        learnt from all of it first, so a name detected in one message (after "Dr") is
        also masked where another message mentions it without a cue."""
        for text in request_texts(body):
            self.learn(text)
        return map_texts(body, self.replace_known)

    def mask_messages(self, messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        masked: list[dict[str, Any]] = self.mask_request(list(messages))
        return masked

    def restore(self, text: str) -> str:
        """Placeholders back to their values; unknown ones are left as they are."""
        return PLACEHOLDER.sub(lambda m: self.by_placeholder.get(m.group(0), m.group(0)), text)

    def stream_restorer(self) -> StreamRestorer:
        return StreamRestorer(self)


@dataclass(slots=True)
class StreamRestorer:
    """Feed reply chunks in order; get out text that is safe to show (restored)."""

    owner: Pseudonymiser
    held: str = ""

    def feed(self, chunk: str) -> str:
        text = self.held + chunk
        cut = text.rfind("<")
        if cut != -1 and ">" not in text[cut:] and len(text) - cut <= _LONGEST:
            tail = text[cut:]
            if re.fullmatch(r"<[A-Z_]*\d*", tail):  # could still become a placeholder
                self.held = tail
                return self.owner.restore(text[:cut])
        self.held = ""
        return self.owner.restore(text)

    def flush(self) -> str:
        """What is still held at the end of the stream."""
        text, self.held = self.held, ""
        return self.owner.restore(text)
