"""Opt-in requantisation of a GGUF (cached conversion)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmduet.engine.quantize import requantized
from llmduet.errors import InvalidModelFileError
from llmduet.models.llamacpp import LlamaCppBackend, bundled_model_path
from llmduet.models.types import ChatRequest

pytestmark = pytest.mark.model


def test_requantized_copy_is_cached_and_runs(tmp_path: Path) -> None:
    target = requantized(bundled_model_path(), "q8_0", tmp_path)
    assert target.read_bytes()[:4] == b"GGUF"
    assert target.parent == tmp_path and target.name.endswith(".q8_0.gguf")
    stamp = target.stat().st_mtime_ns
    assert requantized(bundled_model_path(), "q8_0", tmp_path) == target
    assert target.stat().st_mtime_ns == stamp  # reused, not converted again
    assert not list(tmp_path.glob("*.partial-*"))


async def test_a_requantized_backend_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    backend = LlamaCppBackend("q8", requantize="q8_0", threads=2, n_ctx=256, max_sequences=1)
    result = await backend.complete(ChatRequest.from_prompt("Say hi.", max_tokens=4, seed=1))
    assert result.text and result.usage is not None and result.usage.completion_tokens <= 4
    assert list((tmp_path / "llmduet" / "gguf").glob("*.q8_0.gguf"))
    backend.unload()


def test_unknown_format_and_bad_source(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelFileError, match="choose one of q4_0, q8_0"):
        requantized(bundled_model_path(), "q2_k", tmp_path)
    junk = tmp_path / "junk.gguf"
    junk.write_text("nope")
    with pytest.raises(InvalidModelFileError, match="is not a GGUF"):
        requantized(junk, "q4_0", tmp_path)
