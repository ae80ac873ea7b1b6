"""The bundled MiniLM embedder (int8 ONNX on onnxruntime)."""

from __future__ import annotations

import numpy as np
import pytest

from llmduet.embeddings import MiniLMEmbedder


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder(threads=2)


def test_vectors_are_normalised_and_order_is_kept(embedder: MiniLMEmbedder) -> None:
    texts = ["A short one.", "A much longer sentence " * 20, "Middle length text here."]
    result = embedder.embed(texts)
    assert result.vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    single = embedder.embed([texts[1]]).vectors[0]
    assert np.allclose(result.vectors[1], single, atol=1e-4)  # batching by length keeps order
    assert result.token_counts[1] > result.token_counts[0]


def test_similar_meanings_are_closer(embedder: MiniLMEmbedder) -> None:
    cat, feline, finance = embedder.embed(
        ["The cat sat on the mat.", "A feline rested on the rug.", "Quarterly revenue grew 8%."]
    ).vectors
    assert cat @ feline > 0.4
    assert cat @ feline > cat @ finance + 0.3


def test_long_texts_are_truncated_not_rejected(embedder: MiniLMEmbedder) -> None:
    result = embedder.embed(["word " * 2000])
    assert result.token_counts == [256]
