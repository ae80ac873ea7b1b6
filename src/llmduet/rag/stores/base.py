"""The chunk store seam: dense search, lexical (BM25) search, and replace-by-source."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from llmduet.rag.chunking import Chunk


@dataclass(frozen=True, slots=True)
class StoredHit:
    chunk: Chunk
    score: float  # higher is better: cosine similarity (dense) or BM25 (lexical)


class ChunkStore(Protocol):
    def replace_source(
        self, source: str, chunks: list[Chunk], vectors: npt.NDArray[np.float32]
    ) -> None:
        """Atomically make ``chunks`` the only chunks of ``source``."""
        ...

    def delete_source(self, source: str) -> None: ...

    def dense(
        self, vector: npt.NDArray[np.float32], k: int, path_glob: str | None = None
    ) -> list[StoredHit]: ...

    def lexical(self, query: str, k: int, path_glob: str | None = None) -> list[StoredHit]: ...

    def count(self) -> int: ...

    def finish_ingest(self) -> None:
        """Fold new rows into indexes; called once after a batch of changes."""
        ...

    def close(self) -> None:
        """Release files and connections (Qdrant's local mode locks its folder)."""
        ...
