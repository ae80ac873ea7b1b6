"""RAG metrics after RAGAS's published definitions, computed with any registered judge.

- faithfulness: the answer is split into standalone statements; the judge marks each as
  supported by the retrieved context or not; score = supported / all statements.
- answer relevancy: the judge writes questions the answer would answer (and flags a
  noncommittal answer); score = mean cosine (bundled MiniLM) between those questions and
  the real one, 0 for a noncommittal answer.
- context precision: the judge marks each retrieved passage useful or not for reaching
  the reference answer; score = mean of precision@k over the ranks k of useful passages
  (average precision), so useful passages ranked first score higher.
- context recall: the reference is split into sentences; the judge marks each as
  attributable to the retrieved context or not; score = attributable / all sentences.

Every judge reply is forced into a JSON schema (the verdict lists have exactly one entry
per item) and retried, as for the rubric judge, so a small local judge still yields a
number or, after the last try, a missing value with the reason — never NaN.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from llmduet.evals.metrics.forced import JudgeFailed, ask_json, messages
from llmduet.models.base import ChatBackend

__all__ = [
    "RAG_METRICS",
    "JudgeFailed",
    "answer_relevancy",
    "context_precision",
    "context_recall",
    "faithfulness",
]
MAX_STATEMENTS = 8
RAG_METRICS = ("faithfulness", "answer_relevancy", "context_precision", "context_recall")


async def ask(backend: ChatBackend, system: str, user: str, schema: dict[str, Any]) -> Any:
    """The judge's JSON object, forced into ``schema`` and retried."""
    data, _ = await ask_json(
        backend,
        messages(system, user),
        schema,
        lambda d: d if isinstance(d, dict) else None,
        seed=6,
    )
    return data


def _verdict_schema(count: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "verdicts": {
                "type": "array",
                "items": {"type": "integer", "enum": [0, 1]},
                "minItems": count,
                "maxItems": count,
            }
        },
        "required": ["verdicts"],
    }


async def verdicts(
    backend: ChatBackend, instruction: str, context: str, items: list[str]
) -> list[int]:
    numbered = "\n".join(f"{i}. {item}" for i, item in enumerate(items, 1))
    reply = await ask(
        backend,
        f"{instruction} Reply with JSON only: one verdict per numbered item, in order, "
        "1 for yes and 0 for no.",
        f"Context:\n{context}\n\nItems:\n{numbered}",
        _verdict_schema(len(items)),
    )
    values = reply.get("verdicts") if isinstance(reply, dict) else None
    if (
        not isinstance(values, list)
        or len(values) != len(items)
        or not all(v in (0, 1) for v in values)
    ):
        raise JudgeFailed(f"expected {len(items)} verdicts of 0 or 1, got {values!r}")
    return [int(v) for v in values]


async def statements(backend: ChatBackend, question: str, answer: str) -> list[str]:
    reply = await ask(
        backend,
        "Break the answer into short standalone factual statements (no pronouns), at most "
        f"{MAX_STATEMENTS}. Reply with JSON only.",
        f"Question: {question}\nAnswer: {answer}",
        {
            "type": "object",
            "properties": {
                "statements": {
                    "type": "array",
                    "items": {"type": "string", "minLength": 3, "maxLength": 200},
                    "maxItems": MAX_STATEMENTS,
                }
            },
            "required": ["statements"],
        },
    )
    found = reply.get("statements") if isinstance(reply, dict) else None
    return [s for s in found if isinstance(s, str) and s.strip()] if isinstance(found, list) else []


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if len(s.strip()) > 2]


async def faithfulness(
    backend: ChatBackend, question: str, answer: str, contexts: list[str]
) -> float | None:
    claims = await statements(backend, question, answer)
    if not claims:
        return None  # nothing claimed: faithfulness is undefined, as in RAGAS
    marks = await verdicts(
        backend,
        "For each statement, say whether it can be directly inferred from the context.",
        "\n\n".join(contexts),
        claims,
    )
    return sum(marks) / len(marks)


async def answer_relevancy(
    backend: ChatBackend,
    question: str,
    answer: str,
    embed: Callable[[list[str]], Any],
    count: int = 3,
) -> float:
    reply = await ask(
        backend,
        f"Write {count} questions that the answer below answers. Also say whether the "
        "answer is noncommittal (evasive, vague, 'I don't know'): 1 if so, else 0. "
        "Reply with JSON only.",
        f"Answer: {answer}",
        {
            "type": "object",
            "properties": {
                "questions": {
                    "type": "array",
                    "items": {"type": "string", "minLength": 5, "maxLength": 200},
                    "minItems": count,
                    "maxItems": count,
                },
                "noncommittal": {"type": "integer", "enum": [0, 1]},
            },
            "required": ["questions", "noncommittal"],
        },
    )
    questions = reply.get("questions") if isinstance(reply, dict) else None
    generated = [q for q in questions if isinstance(q, str)] if isinstance(questions, list) else []
    if not generated:
        raise JudgeFailed(f"the judge wrote no questions: {reply!r:.80}")
    if reply.get("noncommittal") == 1:
        return 0.0
    vectors = np.asarray(embed([question, *generated]))
    return float(np.clip(np.mean(vectors[1:] @ vectors[0]), 0.0, 1.0))


async def context_precision(
    backend: ChatBackend, question: str, reference: str, contexts: list[str]
) -> float | None:
    if not contexts:
        return None
    marks = await verdicts(
        backend,
        f"Question: {question}\nReference answer: {reference}\n"
        "For each numbered passage, say whether it was useful in arriving at the reference "
        "answer.",
        "(the passages are the items below)",
        contexts,
    )
    useful = 0
    total = 0.0
    for rank, mark in enumerate(marks, 1):
        if mark:
            useful += 1
            total += useful / rank
    return total / useful if useful else 0.0


async def context_recall(backend: ChatBackend, reference: str, contexts: list[str]) -> float | None:
    parts = sentences(reference)
    if not parts or not contexts:
        return None
    marks = await verdicts(
        backend,
        "For each numbered sentence of the reference answer, say whether it can be "
        "attributed to the context.",
        "\n\n".join(contexts),
        parts,
    )
    return sum(marks) / len(marks)
