"""Embeddings from the OpenAI API or any OpenAI-compatible endpoint (``duet serve``
included), through the official SDK, batched."""

from __future__ import annotations

import os

import numpy as np
import openai

from llmduet.embeddings.base import Embeddings
from llmduet.errors import BackendError, ModelNotReadyError

BATCH = 256


class OpenAIEmbedder:
    max_tokens = 8191

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        base_url: str | None = None,
        api_key_env: str | None = None,
        max_retries: int = 2,
    ) -> None:
        key_env = api_key_env or (None if base_url else "OPENAI_API_KEY")
        key = os.environ.get(key_env) if key_env else "no-key-needed"
        if not key:
            raise ModelNotReadyError(f"the embedder '{model}' needs an API key: set {key_env}")
        self.model = model
        self.name = f"{model}@{base_url}" if base_url else model
        self._client = openai.OpenAI(api_key=key, base_url=base_url, max_retries=max_retries)
        self.dimensions = int(self.embed(["dimension probe"]).vectors.shape[1])

    def embed(self, texts: list[str]) -> Embeddings:
        rows: list[list[float]] = []
        tokens = 0
        for start in range(0, len(texts), BATCH):
            batch = [text or " " for text in texts[start : start + BATCH]]
            try:
                response = self._client.embeddings.create(model=self.model, input=batch)
            except openai.APIError as exc:
                raise BackendError(f"embedding with '{self.name}' failed: {exc}") from None
            rows += [item.embedding for item in sorted(response.data, key=lambda d: d.index)]
            tokens += response.usage.prompt_tokens
        vectors = np.asarray(rows, dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        share = tokens // max(len(texts), 1)  # the API reports a total, not per input
        return Embeddings(vectors=vectors, token_counts=[share] * len(texts))
