"""Evaluation cases from JSONL, read forgivingly: a bad line is reported, the rest run.

One JSON object per line: ``id``; ``input`` (a user prompt) or ``messages`` (OpenAI chat
messages); optional ``reference`` (a string or a list of acceptable strings),
``contexts`` (gold passages), ``sources`` (gold source documents, for retrieval
metrics), ``tags`` and ``metrics`` (metric specs for this case, e.g.
``{"name": "contains", "needle": ["42"]}``). The RAG question-set spelling
(``question`` / ``answer``) is accepted too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmduet.errors import ConfigError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True, slots=True)
class EvalCase:
    id: str
    messages: list[dict[str, str]]
    reference: str | list[str] | None = None
    contexts: list[str] | None = None
    sources: list[str] | None = None
    tags: list[str] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def question(self) -> str:
        """The last user message: what retrieval searches for and judges read."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")

    @property
    def references(self) -> list[str]:
        if self.reference is None:
            return []
        return [self.reference] if isinstance(self.reference, str) else list(self.reference)


@dataclass(slots=True)
class Dataset:
    path: Path
    cases: list[EvalCase]
    problems: list[str]  # "line N: what is wrong", one per skipped line


def _messages(record: dict[str, Any]) -> list[dict[str, str]]:
    prompt = record.get("input", record.get("question"))
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list of {role, content}")
        for message in messages:
            if (
                not isinstance(message, dict)
                or message.get("role") not in ROLES
                or not isinstance(message.get("content"), str)
            ):
                raise ValueError(
                    "each message needs 'role' (system, user or assistant) and 'content' text"
                )
        if not any(m["role"] == "user" for m in messages):
            raise ValueError("'messages' has no user message")
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    if isinstance(prompt, str) and prompt.strip():
        return [{"role": "user", "content": prompt}]
    raise ValueError("missing field 'input' (the prompt) or 'messages'")


def _strings(record: dict[str, Any], key: str) -> list[str] | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise ValueError(f"'{key}' must be a string or a list of strings")


def parse_case(record: Any) -> EvalCase:
    if not isinstance(record, dict):
        raise ValueError("a case must be a JSON object")
    if "id" not in record or not isinstance(record["id"], str | int) or record["id"] == "":
        raise ValueError("missing field 'id' (a string or number)")
    reference = record.get("reference", record.get("answer"))
    if isinstance(reference, int | float) and not isinstance(reference, bool):
        reference = str(reference)  # an arithmetic answer written as a number
    elif isinstance(reference, list):
        reference = [str(r) if isinstance(r, int | float) else r for r in reference]
    if reference is not None and not isinstance(reference, str):
        reference = _strings({"reference": reference}, "reference")
    metrics = record.get("metrics", [])
    if not isinstance(metrics, list) or not all(
        isinstance(m, dict) and isinstance(m.get("name"), str) for m in metrics
    ):
        raise ValueError("'metrics' must be a list of objects with a 'name'")
    return EvalCase(
        id=str(record["id"]),
        messages=_messages(record),
        reference=reference,
        contexts=_strings(record, "contexts"),
        sources=_strings(record, "sources"),
        tags=_strings(record, "tags") or [],
        metrics=metrics,
    )


def load_dataset(path: Path) -> Dataset:
    """All good cases of ``path``; each bad line becomes a problem naming its line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: give a JSONL file of cases") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    cases: list[EvalCase] = []
    problems: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            case = parse_case(json.loads(line))
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        if case.id in seen:
            problems.append(f"line {number}: duplicate id '{case.id}'")
            continue
        seen.add(case.id)
        cases.append(case)
    if not cases:
        detail = f" ({problems[0]})" if problems else ""
        raise ConfigError(f"{path} has no usable cases{detail}")
    return Dataset(path, cases, problems)
