"""The embedder seam."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: npt.NDArray[np.float32]  # (n, dim), L2-normalised rows
    token_counts: list[int]

    @property
    def total_tokens(self) -> int:
        return sum(self.token_counts)


class Embedder(Protocol):
    name: str
    dimensions: int
    max_tokens: int

    def embed(self, texts: list[str]) -> Embeddings:
        """Embed texts in order; rows are L2-normalised."""
        ...
