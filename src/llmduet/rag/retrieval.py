"""Dense, BM25 and hybrid retrieval.

Hybrid search fuses the two ranked lists one of two ways:

- ``rrf`` (default): reciprocal rank fusion, which needs no tuning and ignores the scores'
  scales, so it holds up on any corpus;
- ``relative``: a convex combination of the two legs' min-max normalised scores,
  ``alpha * dense + (1 - alpha) * bm25`` (Weaviate's "relative score fusion"). Bruch et
  al. (2023, "An Analysis of Fusion Functions for Hybrid Retrieval") found it beats RRF
  once ``alpha`` is tuned on a few labelled queries; ``benchmarks/rag_retrieval_quality.py``
  shows how to tune it without fooling yourself (cross-validated).

A hybrid search runs its BM25 leg on a worker thread while this thread embeds the query
and runs the dense leg: the stores and onnxruntime release the GIL, so on two cores the
search costs about the slower leg rather than the sum of both.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from llmduet.embeddings import Embedder
from llmduet.rag.chunking import Chunk
from llmduet.rag.stores.base import ChunkStore, StoredHit

Mode = Literal["hybrid", "dense", "bm25"]
Fusion = Literal["rrf", "relative"]
FUSIONS: tuple[Fusion, ...] = ("rrf", "relative")
DEFAULT_ALPHA = 0.75  # Weaviate's default weight of the dense leg
RRF_K = 60  # the constant of Cormack et al.; damps the weight of top ranks
CANDIDATES_PER_K = 4


@dataclass(frozen=True, slots=True)
class Hit:
    chunk: Chunk
    score: float  # hybrid: the fused score; dense: cosine; bm25: BM25
    dense_rank: int | None = None
    bm25_rank: int | None = None
    similarity: float | None = None  # cosine to the query, when the dense search found it

    def to_dict(self) -> dict[str, object]:
        chunk = self.chunk
        return {
            "source": chunk.source,
            "title": chunk.title,
            "heading": chunk.heading,
            "page": chunk.page,
            "start": chunk.start,
            "end": chunk.end,
            "score": round(self.score, 6),
            "dense_rank": self.dense_rank,
            "bm25_rank": self.bm25_rank,
            "similarity": self.similarity,
            "text": chunk.text,
        }


def _fuse(rankings: list[list[StoredHit]], scores: dict[str, float], k: int) -> list[Hit]:
    """The top ``k`` of ``scores`` as hits, with each chunk's rank in every list and its
    cosine similarity (the first list must be the dense one)."""
    chunks: dict[str, Chunk] = {}
    ranks: dict[str, list[int | None]] = {}
    similarity: dict[str, float] = {}
    for position, ranking in enumerate(rankings):
        for rank, hit in enumerate(ranking, 1):
            key = hit.chunk.id
            chunks[key] = hit.chunk
            ranks.setdefault(key, [None] * len(rankings))[position] = rank
            if position == 0:
                similarity[key] = hit.score
    ordered = sorted(scores, key=lambda key: -scores[key])[:k]
    return [
        Hit(chunks[key], scores[key], ranks[key][0], ranks[key][-1], similarity.get(key))
        for key in ordered
    ]


def reciprocal_rank_fusion(rankings: list[list[StoredHit]], k: int) -> list[Hit]:
    """Fuse ranked lists: score = sum of 1 / (RRF_K + rank) over the lists a chunk is in.
    The first list must be the dense one; its cosine scores are kept as ``similarity``."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, 1):
            scores[hit.chunk.id] = scores.get(hit.chunk.id, 0.0) + 1.0 / (RRF_K + rank)
    return _fuse(rankings, scores, k)


def relative_score_fusion(
    dense: list[StoredHit], lexical: list[StoredHit], k: int, alpha: float = DEFAULT_ALPHA
) -> list[Hit]:
    """Fuse by ``alpha`` x the dense score + (1 - ``alpha``) x the BM25 score, each
    min-max normalised to [0, 1] over its own list (a list of one scores 1)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    scores: dict[str, float] = {}
    for weight, ranking in ((alpha, dense), (1.0 - alpha, lexical)):
        if not ranking:
            continue
        low = min(hit.score for hit in ranking)
        spread = max(hit.score for hit in ranking) - low
        for hit in ranking:
            normalised = (hit.score - low) / spread if spread > 0 else 1.0
            scores[hit.chunk.id] = scores.get(hit.chunk.id, 0.0) + weight * normalised
    return _fuse([dense, lexical], scores, k)


class Retriever:
    def __init__(self, store: ChunkStore, embedder: Embedder) -> None:
        self.store = store
        self.embedder = embedder
        self._lexical_worker = ThreadPoolExecutor(1, thread_name_prefix="duet-bm25")

    def search(
        self,
        query: str,
        k: int = 5,
        mode: Mode = "hybrid",
        path_glob: str | None = None,
        fusion: Fusion = "rrf",
        alpha: float = DEFAULT_ALPHA,
    ) -> list[Hit]:
        """``fusion`` and ``alpha`` (the dense leg's weight in ``relative`` fusion) apply
        to hybrid search only."""
        if k < 1:
            raise ValueError("k must be at least 1")
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion '{fusion}': choose rrf or relative")
        if mode == "bm25":
            return [
                Hit(h.chunk, h.score, None, rank)
                for rank, h in enumerate(self.store.lexical(query, k, path_glob), 1)
            ]
        if mode == "dense":
            vector = self.embedder.embed([query]).vectors[0]
            return [
                Hit(h.chunk, h.score, rank, None, similarity=h.score)
                for rank, h in enumerate(self.store.dense(vector, k, path_glob), 1)
            ]
        depth = k * CANDIDATES_PER_K
        lexical = self._lexical_worker.submit(self.store.lexical, query, depth, path_glob)
        vector = self.embedder.embed([query]).vectors[0]
        dense = self.store.dense(vector, depth, path_glob)
        if fusion == "relative":
            return relative_score_fusion(dense, lexical.result(), k, alpha)
        return reciprocal_rank_fusion([dense, lexical.result()], k)
