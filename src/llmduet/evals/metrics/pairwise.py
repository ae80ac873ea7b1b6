"""Pairwise A/B judging with position swapping, to cancel the judge's order bias.

For each case and pair of models the judge sees both answers twice, once in each order,
and names the better one (``A``, ``B`` or ``tie``) in a schema-forced verdict. A model
wins the case only if it wins in both orders (or wins one and ties the other); a split
verdict, the signature of position bias, counts as a tie. Outcomes are 1 / 0.5 / 0 for
the first model, ready for win rates and Bradley-Terry scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmduet.evals.metrics.forced import JudgeFailed, ask_json, messages
from llmduet.models.base import ChatBackend

PAIRWISE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reason": {"type": "string", "maxLength": 400},
        "winner": {"type": "string", "enum": ["A", "B", "tie"]},
    },
    "required": ["reason", "winner"],
    "additionalProperties": False,
}
SYSTEM = (
    "You compare two answers to the same question and decide which is better: more "
    "correct, complete and faithful to the reference answer if one is given. Ignore the "
    "order they are shown in and their length. Reply with JSON only: "
    '{"reason": "<one sentence>", "winner": "A" | "B" | "tie"}.'
)
POINTS = {"A": 1.0, "B": 0.0, "tie": 0.5}


@dataclass(frozen=True, slots=True)
class PairwiseVerdict:
    outcome: float | None  # for the first model: 1 win, 0.5 tie, 0 loss; None: no verdict
    reasons: tuple[str, str]
    consistent: bool  # both orders agreed


def winner_of(data: Any) -> tuple[str, str] | None:
    if not isinstance(data, dict) or data.get("winner") not in POINTS:
        return None
    return str(data["winner"]), str(data.get("reason", ""))


async def _one_order(
    backend: ChatBackend, question: str, first: str, second: str, reference: str | None, seed: int
) -> tuple[str, str] | None:
    parts = [f"Question:\n{question}"]
    if reference:
        parts.append(f"Reference answer:\n{reference}")
    parts += [f"Answer A:\n{first or '(empty)'}", f"Answer B:\n{second or '(empty)'}"]
    try:
        verdict, _ = await ask_json(
            backend,
            messages(SYSTEM, "\n\n".join(parts)),
            PAIRWISE_SCHEMA,
            winner_of,
            max_tokens=256,
            seed=seed,
        )
    except JudgeFailed:
        return None
    return verdict


async def compare(
    backend: ChatBackend, question: str, answer_a: str, answer_b: str, reference: str | None = None
) -> PairwiseVerdict:
    """Judge ``answer_a`` against ``answer_b`` in both orders and combine the verdicts."""
    straight = await _one_order(backend, question, answer_a, answer_b, reference, seed=11)
    swapped = await _one_order(backend, question, answer_b, answer_a, reference, seed=23)
    if straight is None or swapped is None:
        missing = "no valid verdict after retries"
        reasons = (straight[1] if straight else missing, swapped[1] if swapped else missing)
        return PairwiseVerdict(None, reasons, False)
    first = POINTS[straight[0]]
    second = 1.0 - POINTS[swapped[0]]  # in the swapped order, "A" is the second model
    average = (first + second) / 2
    outcome = 1.0 if average > 0.5 else 0.0 if average < 0.5 else 0.5
    return PairwiseVerdict(outcome, (straight[1], swapped[1]), first == second)
