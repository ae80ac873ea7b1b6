"""Named models from settings, built into backends on first use.

Providers register a factory exactly as a third-party one would
(:func:`register_provider`); the built-in ``openai`` and ``llamacpp`` are not special.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from llmduet.config import ModelSpec, Settings, load_settings
from llmduet.errors import ConfigError, UnknownModelError
from llmduet.models.base import ChatBackend, Readiness
from llmduet.models.pricing import cost_model_for

BackendFactory = Callable[[str, ModelSpec, Settings], ChatBackend]

_PROVIDERS: dict[str, BackendFactory] = {}


def register_provider(name: str, factory: BackendFactory) -> None:
    _PROVIDERS[name] = factory


def sampling_defaults(spec: ModelSpec) -> dict[str, Any]:
    return {
        key: value
        for key in ("temperature", "top_p", "max_tokens")
        if (value := getattr(spec, key)) is not None
    }


def _openai_factory(name: str, spec: ModelSpec, settings: Settings) -> ChatBackend:
    from llmduet.models.openai import OpenAIBackend

    if not spec.model:
        raise ConfigError(f"models.{name}: provider 'openai' needs `model` (e.g. gpt-4o-mini)")
    key_env = spec.api_key_env or (None if spec.base_url else "OPENAI_API_KEY")
    return OpenAIBackend(
        name,
        spec.model,
        base_url=spec.base_url,
        api_key_env=key_env,
        location=spec.resolved_location,
        cost_model=cost_model_for(spec, settings),
        max_retries=spec.max_retries,
        timeout_s=spec.timeout_s,
        defaults=sampling_defaults(spec),
    )


def _llamacpp_factory(name: str, spec: ModelSpec, settings: Settings) -> ChatBackend:
    from llmduet.models.llamacpp import LlamaCppBackend

    return LlamaCppBackend(
        name,
        spec.path,
        n_ctx=spec.n_ctx,
        threads=spec.threads,
        max_sequences=spec.max_sequences,
        requantize=spec.requantize,
        timeout_s=spec.timeout_s,
        location=spec.resolved_location,
        cost_model=cost_model_for(spec, settings),
        defaults=sampling_defaults(spec),
    )


register_provider("openai", _openai_factory)
register_provider("llamacpp", _llamacpp_factory)


class ModelRegistry:
    """The registered models of one settings object; backends are built once and reused."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self._backends: dict[str, ChatBackend] = {}

    def names(self) -> list[str]:
        return list(dict.fromkeys([*self.settings.models, *self._backends]))

    def add(self, name: str, backend: ChatBackend) -> None:
        """Register a ready-made backend under ``name`` (a fake in tests, a custom client);
        it needs no settings entry and is reached through :meth:`backend` like any other."""
        self._backends[name.lower()] = backend

    def spec(self, name: str) -> ModelSpec:
        try:
            return self.settings.models[name.lower()]
        except KeyError:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise UnknownModelError(
                f"unknown model '{name}': {hint}registered: {', '.join(self.names())} "
                "(add one under [models.NAME] in duet.toml)"
            ) from None

    def backend(self, name: str) -> ChatBackend:
        key = name.lower()
        if key not in self._backends:
            spec = self.spec(key)
            factory = _PROVIDERS.get(spec.provider)
            if factory is None:
                raise ConfigError(f"models.{key}: unknown provider '{spec.provider}'")
            self._backends[key] = factory(key, spec, self.settings)
        return self._backends[key]

    def readiness(self, name: str) -> Readiness:
        return self.backend(name).readiness()

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()


_default: ModelRegistry | None = None


def default_registry() -> ModelRegistry:
    """The registry of ``duet.toml`` and the environment, loaded on first use."""
    global _default
    if _default is None:
        _default = ModelRegistry()
    return _default
