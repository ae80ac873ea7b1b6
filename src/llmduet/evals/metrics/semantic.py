"""Semantic similarity to the reference: cosine of bundled MiniLM embeddings, on [0, 1].

Answers and references are embedded in batches (embedding cost grows with tokens, so one
call per metric pass, not per case). The best match over several references counts.
"""

from __future__ import annotations

import numpy as np

from llmduet.embeddings import Embedder


def similarities(
    embedder: Embedder, answers: list[str], references: list[list[str]]
) -> list[float]:
    """Per answer, the highest cosine to any of its references (0.0 for an empty one)."""
    flat = [ref for refs in references for ref in refs]
    if not answers or not flat:
        return [0.0] * len(answers)
    vectors = embedder.embed([a or " " for a in answers] + flat).vectors
    answer_vectors, reference_vectors = vectors[: len(answers)], vectors[len(answers) :]
    scores, start = [], 0
    for answer, vector, refs in zip(answers, answer_vectors, references, strict=True):
        block = reference_vectors[start : start + len(refs)]
        start += len(refs)
        if not answer.strip() or not len(block):
            scores.append(0.0)
            continue
        scores.append(float(np.clip(np.max(block @ vector), 0.0, 1.0)))
    return scores
