"""A GGUF model loaded through llama.cpp's C API: weights, vocabulary, chat template."""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import Any

import llama_cpp

from llmduet.errors import InvalidModelFileError

_backend_ready = threading.Lock()
_backend_initialised = False


@llama_cpp.llama_log_callback
def _quiet_log(level: int, text: bytes, user_data: Any) -> None:
    """llama.cpp logs every load to stderr; we report problems through our own errors."""


def _init_backend() -> None:
    global _backend_initialised
    with _backend_ready:
        if not _backend_initialised:
            llama_cpp.llama_backend_init()
            llama_cpp.llama_log_set(_quiet_log, ctypes.c_void_p(0))
            _backend_initialised = True


def check_gguf(path: Path) -> None:
    """Raise a one-line error unless ``path`` is a readable GGUF file."""
    if not path.exists():
        raise InvalidModelFileError(f"model file {path} not found: check `path`")
    if not path.is_file():
        raise InvalidModelFileError(f"model path {path} is not a file: point it at a .gguf")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise InvalidModelFileError(f"cannot read {path}: {exc.strerror}") from None
    if magic != b"GGUF":
        raise InvalidModelFileError(
            f"{path} is not a GGUF model file (it does not start with 'GGUF'): "
            "convert it with llama.cpp's convert_hf_to_gguf.py or pick a .gguf file"
        )


class GGUFModel:
    """Weights and vocabulary, shared by every context that runs them."""

    def __init__(self, path: Path) -> None:
        check_gguf(path)
        _init_backend()
        params = llama_cpp.llama_model_default_params()
        params.use_mmap = False  # mapped weights get paged out under memory pressure
        self.path = path
        self.ptr = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self.ptr:
            raise InvalidModelFileError(
                f"llama.cpp could not load {path}: the file may be truncated or of an "
                "unsupported architecture"
            )
        self.vocab = llama_cpp.llama_model_get_vocab(self.ptr)
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(self.ptr))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self._piece_buffer = ctypes.create_string_buffer(256)
        template = llama_cpp.llama_model_chat_template(self.ptr, None)
        self.chat_template: str | None = template.decode("utf-8") if template else None

    def token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return (llama_cpp.llama_vocab_get_text(self.vocab, token) or b"").decode("utf-8", "replace")

    @property
    def bos_text(self) -> str:
        return self.token_text(llama_cpp.llama_vocab_bos(self.vocab))

    @property
    def eos_text(self) -> str:
        return self.token_text(llama_cpp.llama_vocab_eos(self.vocab))

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 16
        tokens = (llama_cpp.llama_token * capacity)()
        count = llama_cpp.llama_tokenize(
            self.vocab, data, len(data), tokens, capacity, add_special, True
        )
        if count < 0:
            capacity = -count
            tokens = (llama_cpp.llama_token * capacity)()
            count = llama_cpp.llama_tokenize(
                self.vocab, data, len(data), tokens, capacity, add_special, True
            )
        return list(tokens[:count])

    def piece(self, token: int) -> bytes:
        """The bytes of one token (engine thread only; the buffer is reused)."""
        buffer = self._piece_buffer
        size = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, False)
        if size < 0:
            exact = ctypes.create_string_buffer(-size)
            size = llama_cpp.llama_token_to_piece(self.vocab, token, exact, -size, 0, False)
            return exact.raw[:size]
        return buffer.raw[:size]

    def is_end(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def close(self) -> None:
        if self.ptr:
            llama_cpp.llama_model_free(self.ptr)
            self.ptr = None
