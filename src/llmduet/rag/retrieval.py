"""Dense, BM25 and hybrid retrieval; hybrid fuses the two by reciprocal rank fusion.

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
RRF_K = 60  # the constant of Cormack et al.; damps the weight of top ranks
CANDIDATES_PER_K = 4


@dataclass(frozen=True, slots=True)
class Hit:
    chunk: Chunk
    score: float  # hybrid: RRF score; dense: cosine; bm25: BM25
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


def reciprocal_rank_fusion(rankings: list[list[StoredHit]], k: int) -> list[Hit]:
    """Fuse ranked lists: score = sum of 1 / (RRF_K + rank) over the lists a chunk is in.
    The first list must be the dense one; its cosine scores are kept as ``similarity``."""
    scores: dict[str, float] = {}
    similarity: dict[str, float] = {}
    chunks: dict[str, Chunk] = {}
    ranks: dict[str, list[int | None]] = {}
    for position, ranking in enumerate(rankings):
        for rank, hit in enumerate(ranking, 1):
            key = hit.chunk.id
            chunks[key] = hit.chunk
            scores[key] = scores.get(key, 0.0) + 1.0 / (RRF_K + rank)
            ranks.setdefault(key, [None] * len(rankings))[position] = rank
            if position == 0:
                similarity[key] = hit.score
    ordered = sorted(scores, key=lambda key: -scores[key])[:k]
    return [
        Hit(chunks[key], scores[key], ranks[key][0], ranks[key][-1], similarity.get(key))
        for key in ordered
    ]


class Retriever:
    def __init__(self, store: ChunkStore, embedder: Embedder) -> None:
        self.store = store
        self.embedder = embedder
        self._lexical_worker = ThreadPoolExecutor(1, thread_name_prefix="duet-bm25")

    def search(
        self, query: str, k: int = 5, mode: Mode = "hybrid", path_glob: str | None = None
    ) -> list[Hit]:
        if k < 1:
            raise ValueError("k must be at least 1")
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
        return reciprocal_rank_fusion([dense, lexical.result()], k)
