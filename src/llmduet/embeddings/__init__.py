"""Text embedders behind one small seam (used by ``duet serve`` and RAG)."""

from llmduet.embeddings.base import Embedder, Embeddings
from llmduet.embeddings.minilm import MiniLMEmbedder

__all__ = ["Embedder", "Embeddings", "MiniLMEmbedder"]
