"""Settings from ``duet.toml`` and ``DUET_*`` environment variables.

Precedence, highest first: environment (``DUET_HARDWARE_USD_PER_HOUR=0.2``,
``DUET_MODELS__LLAMA__THREADS=4``), then the TOML file, then built-in defaults.
The file is ``./duet.toml`` unless ``DUET_CONFIG`` names another one. Built-in models
work with no file at all; a file entry with a built-in name overrides only the keys it sets.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from llmduet.config.gateway import GatewaySpec
from llmduet.errors import ConfigError

Provider = Literal["llamacpp", "openai"]

BUILTIN_MODELS: dict[str, dict[str, Any]] = {
    "llama": {"provider": "llamacpp", "model": "SmolLM2-135M-Instruct"},
    "chatgpt": {"provider": "openai", "model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY"},
}

_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


def is_loopback(url: str) -> bool:
    """Does ``url`` point at this machine?"""
    return urlparse(url).hostname in _LOOPBACK_HOSTS


class ModelSpec(BaseModel):
    """One registered model: where it runs and how to reach it."""

    model_config = ConfigDict(extra="forbid")

    provider: Provider
    model: str | None = Field(None, description="API model id, or a display name for a GGUF")
    path: str | None = Field(None, description="GGUF file (llamacpp); default: bundled SmolLM2")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint (openai)")
    api_key_env: str | None = Field(None, description="environment variable holding the key")
    location: Literal["local", "external"] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, gt=0)
    threads: int | None = Field(None, gt=0, description="llama.cpp threads (default: all cores)")
    n_ctx: int = Field(4096, gt=0, description="context window per sequence (llamacpp)")
    requantize: Literal["q4_0", "q8_0"] | None = Field(
        None, description="convert the GGUF once for faster batched decoding (llamacpp)"
    )
    max_sequences: int = Field(
        4, ge=1, le=64, description="requests a llamacpp model decodes together"
    )
    max_retries: int = Field(2, ge=0, le=10, description="retries on 429/5xx/connect errors")
    timeout_s: float = Field(120.0, gt=0)
    usd_per_hour: float | None = Field(None, ge=0, description="hardware price if self-hosted")

    @property
    def resolved_location(self) -> Literal["local", "external"]:
        """``local`` for in-process models and loopback endpoints unless set explicitly."""
        if self.location:
            return self.location
        if self.provider == "llamacpp":
            return "local"
        return "local" if self.base_url and is_loopback(self.base_url) else "external"


class TokenPrice(BaseModel):
    """USD per one million tokens."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)


_toml_path: ContextVar[Path | None] = ContextVar("duet_toml_path", default=None)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DUET_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    models: dict[str, ModelSpec] = Field(default_factory=dict)
    pricing: dict[str, TokenPrice] = Field(default_factory=dict)
    hardware_usd_per_hour: float = Field(
        0.10, ge=0, description="price of the machine that runs local models"
    )
    gateway: GatewaySpec = Field(default_factory=lambda: GatewaySpec.model_validate({}))
    config: str | None = Field(None, description="path of the settings file (DUET_CONFIG)")

    @model_validator(mode="before")
    @classmethod
    def _merge_builtin_models(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        user = data.get("models") or {}
        if not isinstance(user, dict):
            return data
        merged: dict[str, Any] = {name: dict(spec) for name, spec in BUILTIN_MODELS.items()}
        for name, spec in user.items():
            key = name.lower()
            if isinstance(spec, dict) and key in merged:
                merged[key] = {**merged[key], **spec}
            else:
                merged[key] = spec
        return {**data, "models": merged}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _toml_path.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def _config_path(explicit: str | os.PathLike[str] | None) -> Path | None:
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"settings file {path} not found; check the path or DUET_CONFIG")
        return path
    env = os.environ.get("DUET_CONFIG")
    if env:
        return _config_path(env)
    default = Path("duet.toml")
    return default if default.is_file() else None


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Load settings; every problem becomes a one-line :class:`ConfigError`."""
    toml_path = _config_path(path)
    if toml_path is not None:
        try:
            tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{toml_path} is not valid TOML: {exc}") from None
    token = _toml_path.set(toml_path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        where = str(toml_path) if toml_path else "settings"
        raise ConfigError(f"{where}: {describe_validation_error(exc)}") from None
    finally:
        _toml_path.reset(token)


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem of a pydantic error as ``a.b.c: message (got X)``."""
    first = exc.errors()[0]
    loc = ".".join(str(part) for part in first["loc"])
    got = first.get("input")
    got_text = f" (got {got!r})" if got is not None and not isinstance(got, dict) else ""
    more = f"; and {exc.error_count() - 1} more problem(s)" if exc.error_count() > 1 else ""
    return f"{loc}: {first['msg']}{got_text}{more}"
