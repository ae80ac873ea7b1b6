"""Upstreams: replicas of OpenAI-compatible endpoints, picked by least outstanding requests.

Each replica has a circuit breaker: after ``failures`` consecutive failures it opens and
the replica is skipped for ``reset_s``; then one trial request is let through (half-open)
and its outcome closes or re-opens it. A health check that fails marks a replica down
the same way, so a dead upstream costs no client a timeout once it has been noticed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlparse

from llmduet.config import Settings
from llmduet.config.settings import ModelSpec, is_loopback
from llmduet.errors import ConfigError
from llmduet.models.pricing import CostModel, cost_model_for

OPENAI_BASE_URL = "https://api.openai.com/v1"

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(slots=True)
class CircuitBreaker:
    failures: int = 3
    reset_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    consecutive: int = 0
    opened_at: float | None = None
    trial_running: bool = False

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.reset_s else "open"

    def allows(self) -> bool:
        """May a request go now? In half-open state only one trial at a time."""
        state = self.state
        return state == "closed" or (state == "half_open" and not self.trial_running)

    def start(self) -> bool:
        """Note a request going out; True if it is the half-open trial."""
        if self.state == "half_open" and not self.trial_running:
            self.trial_running = True
            return True
        return False

    def succeeded(self) -> None:
        self.consecutive, self.opened_at, self.trial_running = 0, None, False

    def failed(self, trial: bool = False) -> None:
        if trial:
            self.trial_running = False
            self.opened_at = self.clock()
            return
        if self.state == "open":
            return  # a request sent before it opened: the open period stays as it was
        self.consecutive += 1
        if self.consecutive >= self.failures:
            self.opened_at = self.clock()

    def abandoned(self, trial: bool) -> None:
        """The request ended with no verdict (the client left): let another trial go."""
        if trial:
            self.trial_running = False


@dataclass(slots=True)
class Replica:
    base_url: str
    breaker: CircuitBreaker
    outstanding: int = 0
    healthy: bool = True
    last_error: str | None = None

    @property
    def usable(self) -> bool:
        return self.healthy and self.breaker.allows()


@dataclass(slots=True)
class Upstream:
    """One target of a route: a model id on one or more replicas."""

    name: str
    model: str
    location: Literal["local", "external"]
    replicas: list[Replica]
    api_key: str | None = None
    cost_model: CostModel = field(default_factory=CostModel)
    missing_key: str | None = None  # set: never usable, never health-checked
    _turn: int = 0

    def pick(self, exclude: Replica | None = None) -> Replica | None:
        """The usable replica with the fewest requests in flight (ties in turn);
        ``exclude`` (the replica that just failed) only if it is the only one left."""
        usable = [r for r in self.replicas if r.usable]
        if exclude is not None and len(usable) > 1:
            usable = [r for r in usable if r is not exclude]
        if not usable:
            return None
        self._turn += 1
        fewest = min(r.outstanding for r in usable)
        tied = [r for r in usable if r.outstanding == fewest]
        return tied[self._turn % len(tied)]

    @property
    def available(self) -> bool:
        return any(r.usable for r in self.replicas)

    def usable_count(self) -> int:
        return sum(r.usable for r in self.replicas)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def _location_of(urls: list[str]) -> Literal["local", "external"]:
    return "local" if all(is_loopback(url) for url in urls) else "external"


def _check_url(where: str, url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(
            f"{where}: '{url}' is not an http(s) URL such as http://127.0.0.1:8000/v1"
        )
    return url.rstrip("/")


def build_upstream(name: str, settings: Settings) -> Upstream:
    """Resolve a target name: a ``[gateway.upstreams.NAME]`` entry, else ``[models.NAME]``."""
    gateway = settings.gateway
    spec = gateway.upstreams.get(name)
    model_name = spec.from_model if spec and spec.from_model else (None if spec else name)
    where = f"gateway.upstreams.{name}" if spec else f"gateway target '{name}'"
    model: ModelSpec | None = None
    if model_name is not None:
        model = settings.models.get(model_name.lower())
        if model is None:
            known = sorted({*gateway.upstreams, *settings.models})
            raise ConfigError(
                f"{where}: no upstream or registered model '{model_name}' "
                f"(known: {', '.join(known)}); add [gateway.upstreams.{model_name}]"
            )
        if model.provider != "openai":
            raise ConfigError(
                f"{where}: model '{model_name}' runs in process ({model.provider}); the gateway "
                "needs an HTTP endpoint: run it with `duet serve` and register that URL "
                '(provider = "openai", base_url = "http://127.0.0.1:8000/v1")'
            )
    urls = list(spec.base_urls) if spec and spec.base_urls else []
    if not urls:
        urls = [model.base_url if model and model.base_url else OPENAI_BASE_URL]
    urls = [_check_url(where, url) for url in urls]
    model_id = (spec.model if spec else None) or (model.model if model else None)
    if not model_id:
        raise ConfigError(f"{where}: set `model`, the model id to send upstream")
    key_env = (spec.api_key_env if spec else None) or (model.api_key_env if model else None)
    if key_env is None and urls == [OPENAI_BASE_URL]:
        key_env = "OPENAI_API_KEY"
    location = (spec.location if spec else None) or (model.location if model else None)
    location = location or _location_of(urls)
    api_key = os.environ.get(key_env) if key_env else None
    missing = f"{key_env} is not set" if key_env and not api_key else None
    pricing_spec = (model or ModelSpec.model_validate({"provider": "openai"})).model_copy(
        update={"model": model_id, "location": location}
    )
    return Upstream(
        name=name,
        model=model_id,
        location=location,
        replicas=[
            Replica(
                url,
                CircuitBreaker(gateway.breaker_failures, gateway.breaker_reset_s),
                healthy=missing is None,
                last_error=missing,
            )
            for url in urls
        ],
        api_key=api_key,
        cost_model=cost_model_for(pricing_spec, settings),
        missing_key=missing,
    )
