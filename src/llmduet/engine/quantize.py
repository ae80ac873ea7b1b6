"""Opt-in requantisation of a GGUF for faster batched decoding on CPUs.

llama.cpp's batched CPU kernels amortise work across sequences for some formats (Q4_0
is repacked for AVX2 GEMM) but not others (Q4_1), so on such hosts a Q4_1 model decodes
no faster with 8 sequences than with 1. Requantising once trades a little fidelity
(``q4_0``) or a little memory (``q8_0``, near-lossless from 4-bit sources) for batched
throughput. The converted file is cached next to nothing of the user's: under
``$XDG_CACHE_HOME/llmduet/gguf`` (default ``~/.cache/llmduet/gguf``).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import llama_cpp

from llmduet.engine.model import check_gguf
from llmduet.errors import InvalidModelFileError

FORMATS = {"q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0, "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmduet" / "gguf"


def requantized(source: Path, kind: str, directory: Path | None = None) -> Path:
    """The path of ``source`` requantised to ``kind``, converting it on first use."""
    if kind not in FORMATS:
        raise InvalidModelFileError(
            f"unknown requantize format '{kind}': choose one of {', '.join(FORMATS)}"
        )
    check_gguf(source)
    directory = directory or cache_dir()
    stat = source.stat()
    target = directory / f"{source.stem}.{stat.st_size}-{int(stat.st_mtime)}.{kind}.gguf"
    if target.is_file():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".partial-{os.getpid()}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FORMATS[kind]
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(
        str(source).encode(), str(partial).encode(), ctypes.byref(params)
    )
    if status != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise InvalidModelFileError(f"llama.cpp could not requantize {source} to {kind}")
    partial.replace(target)  # atomic: a half-written file is never picked up
    return target
