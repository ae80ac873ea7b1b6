from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmduet.models.llamacpp import LlamaCppBackend
from llmduet.models.pricing import CostModel
from llmduet.testing import ScriptedOpenAIServer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("OPENAI_API_KEY"):
        return
    skip = pytest.mark.skip(reason="live test: set OPENAI_API_KEY to run it")
    for item in items:
        if "live" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """No stray duet.toml or DUET_* variable leaks into a test; live tests keep the key."""
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("DUET_"):
            monkeypatch.delenv(key)
    if "live" not in request.keywords:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


@pytest.fixture(scope="session")
def llama() -> LlamaCppBackend:
    """The bundled SmolLM2 in process, loaded once for the whole run."""
    return LlamaCppBackend("llama", threads=2, n_ctx=2048, cost_model=CostModel(usd_per_hour=0.10))


@pytest.fixture(scope="session")
def duet_exe() -> str:
    exe = Path(sys.executable).parent / "duet"
    found = str(exe) if exe.exists() else shutil.which("duet")
    assert found, "the duet console script is not installed (pip install -e .)"
    return found
