from __future__ import annotations

from pathlib import Path

import pytest

from llmduet.config import load_settings
from llmduet.errors import ConfigError, UnknownModelError
from llmduet.models.registry import ModelRegistry


def test_builtin_models_need_no_file() -> None:
    settings = load_settings()
    assert settings.models["llama"].provider == "llamacpp"
    assert settings.models["llama"].resolved_location == "local"
    assert settings.models["chatgpt"].model == "gpt-4o-mini"
    assert settings.models["chatgpt"].resolved_location == "external"


def test_file_overrides_only_the_keys_it_sets_and_adds_models(tmp_path: Path) -> None:
    (tmp_path / "duet.toml").write_text(
        """
hardware_usd_per_hour = 0.5
[models.llama]
threads = 1
[models.served]
provider = "openai"
model = "smollm2"
base_url = "http://127.0.0.1:8000/v1"
[pricing.my-model]
input = 1.0
output = 2.0
"""
    )
    settings = load_settings()
    assert settings.models["llama"].threads == 1
    assert settings.models["llama"].provider == "llamacpp"
    assert settings.models["served"].resolved_location == "local"
    assert settings.hardware_usd_per_hour == 0.5
    assert settings.pricing["my-model"].output == 2.0


def test_environment_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "duet.toml").write_text("hardware_usd_per_hour = 0.5\n")
    monkeypatch.setenv("DUET_HARDWARE_USD_PER_HOUR", "0.25")
    monkeypatch.setenv("DUET_MODELS__LLAMA__THREADS", "3")
    settings = load_settings()
    assert settings.hardware_usd_per_hour == 0.25
    assert settings.models["llama"].threads == 3


def test_duet_config_points_at_another_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text("[models.extra]\nprovider = 'openai'\nmodel = 'gpt-4o'\n")
    monkeypatch.setenv("DUET_CONFIG", str(other))
    assert "extra" in load_settings().models


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("models = [", "is not valid TOML"),
        ("[models.llama]\nthreads = 'many'\n", "models.llama.threads"),
        ("[models.x]\nprovider = 'bard'\n", "models.x.provider"),
        ("[models.llama]\ntemperature = 5\n", "less than or equal to 2"),
        ("[models.llama]\ncolour = 'red'\n", "models.llama.colour"),
    ],
)
def test_bad_settings_give_one_line_errors(tmp_path: Path, content: str, expected: str) -> None:
    (tmp_path / "duet.toml").write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_explicit_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings("nope.toml")


def test_unknown_model_suggests_a_close_name() -> None:
    with pytest.raises(UnknownModelError, match="did you mean 'llama'"):
        ModelRegistry(load_settings()).spec("lama")


def test_openai_model_without_model_id_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "duet.toml").write_text("[models.bad]\nprovider = 'openai'\n")
    with pytest.raises(ConfigError, match="needs `model`"):
        ModelRegistry(load_settings()).backend("bad")
