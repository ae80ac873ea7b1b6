"""LLM-as-judge with a rubric, forced into a JSON schema so a small judge never yields NaN.

The verdict is ``{"reason": str, "score": 1-5}``, reason first so the judge reasons
before it scores, forced and retried by :func:`~llmduet.evals.metrics.forced.ask_json`;
after the last try the verdict is missing (``None``) with the reason, never a crash or NaN.
The score is reported on [0, 1] as ``(score - 1) / 4``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmduet.evals.metrics.forced import ATTEMPTS, JudgeFailed, ask_json
from llmduet.models.base import ChatBackend

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


@dataclass(frozen=True, slots=True)
class Verdict:
    score: float | None  # on [0, 1]; None when the judge never gave a valid verdict
    raw_score: int | None
    reason: str
    attempts: int


def verdict_of(data: Any) -> tuple[int, str] | None:
    """``(score, reason)`` from a parsed verdict, or None when it is not one."""
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
    prompt = judge_messages(rubric, question, answer, reference)
    try:
        (score, reason), attempts = await ask_json(
            backend, prompt, VERDICT_SCHEMA, verdict_of, max_tokens=256, seed=seed
        )
    except JudgeFailed as exc:
        return Verdict(None, None, str(exc), ATTEMPTS)
    return Verdict((score - 1) / 4, score, reason, attempts)
