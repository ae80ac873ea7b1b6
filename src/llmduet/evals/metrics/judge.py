"""LLM-as-judge with a rubric, forced into a JSON schema so a small judge never yields NaN.

The verdict is ``{"reason": str, "score": 1-5}``, reason first so the judge reasons
before it scores. The schema goes out as ``response_format`` ``json_schema``: llama.cpp
models (in process or behind ``duet serve``) are grammar-constrained to it, OpenAI models
use structured outputs. A reply that still does not parse is retried with another seed;
after the last try the verdict is missing (``None``) with the reason, never a crash or NaN.
The score is reported on [0, 1] as ``(score - 1) / 4``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llmduet.errors import DuetError
from llmduet.models.base import ChatBackend
from llmduet.models.types import ChatRequest

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reason": {"type": "string", "maxLength": 400},
        "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
    },
    "required": ["reason", "score"],
    "additionalProperties": False,
}
DEFAULT_RUBRIC = (
    "Score how well the answer responds to the question: correct, complete, and faithful "
    "to the reference answer when one is given. 5 = fully correct, 1 = wrong or unhelpful."
)
SYSTEM = (
    "You are a strict, fair evaluator. Read the rubric, the question, the reference answer "
    "(if any) and the answer to grade. Reply with JSON only: "
    '{"reason": "<one or two sentences>", "score": <integer 1-5>}.'
)
ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Verdict:
    score: float | None  # on [0, 1]; None when the judge never gave a valid verdict
    raw_score: int | None
    reason: str
    attempts: int


def parse_verdict(text: str) -> tuple[int, str] | None:
    try:
        data = json.loads(text.strip().removeprefix("```json").removesuffix("```"))
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    score = data.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) or score != int(score):
        return None
    if not 1 <= int(score) <= 5:
        return None
    return int(score), str(data.get("reason", ""))


def judge_messages(
    rubric: str, question: str, answer: str, reference: str | None
) -> list[dict[str, str]]:
    parts = [f"Rubric: {rubric}", f"Question:\n{question}"]
    if reference:
        parts.append(f"Reference answer:\n{reference}")
    parts.append(f"Answer to grade:\n{answer or '(empty)'}")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


async def judge(
    backend: ChatBackend,
    question: str,
    answer: str,
    reference: str | None = None,
    rubric: str = DEFAULT_RUBRIC,
    seed: int = 0,
) -> Verdict:
    messages = judge_messages(rubric, question, answer, reference)
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "verdict", "schema": VERDICT_SCHEMA, "strict": True},
    }
    problem = "no reply"
    for attempt in range(1, ATTEMPTS + 1):
        request = ChatRequest(
            messages=messages,
            temperature=0.0 if attempt == 1 else 0.7,
            max_tokens=256,
            seed=seed + attempt,
            response_format=response_format,
        )
        try:
            result = await backend.complete(request)
        except DuetError as exc:
            problem = str(exc)
            continue
        parsed = parse_verdict(result.text)
        if parsed is not None:
            score, reason = parsed
            return Verdict((score - 1) / 4, score, reason, attempt)
        problem = f"unparseable verdict {result.text[:80]!r}"
    return Verdict(None, None, f"judge failed after {ATTEMPTS} tries: {problem}", ATTEMPTS)
