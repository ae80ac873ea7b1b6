"""The ``[gateway]`` section of ``duet.toml``: upstreams, routes, API keys, teams, budgets.

A route is what a client names as ``model``; its policy is an ordered list of rules over
request features, each choosing targets (upstreams, in fallback order) and a privacy
action. Targets name a ``[gateway.upstreams.NAME]`` entry or, with no such entry, a
registered ``[models.NAME]`` of provider ``openai``. Everything is checked when the
gateway is built, so a typo fails at start-up with the path of the bad key, not at the
first request.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PrivacyAction = Literal["route_local", "pseudonymise", "block", "allow"]
OverBudget = Literal["reject", "downgrade"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BudgetSpec(_Strict):
    requests_per_minute: int | None = Field(None, gt=0)
    tokens_per_minute: int | None = Field(None, gt=0)
    usd_per_day: float | None = Field(None, gt=0)
    usd_per_month: float | None = Field(None, gt=0)


class TeamSpec(BudgetSpec):
    """A team's budget; every key of the team draws on it as well as on its own."""


class KeySpec(BudgetSpec):
    """One client API key: the secret comes from an environment variable or its SHA-256,
    so ``duet.toml`` never has to hold it."""

    team: str | None = None
    key_env: str | None = Field(None, description="environment variable holding the key")
    key_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")

    @model_validator(mode="after")
    def _one_source(self) -> KeySpec:
        if (self.key_env is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of `key_env` or `key_sha256`")
        return self


class UpstreamSpec(_Strict):
    """An OpenAI-compatible endpoint with one or more replicas.

    ``from_model`` takes base URL, model id, key and location from a registered model;
    the fields set here override it.
    """

    from_model: str | None = None
    base_urls: list[str] = Field(default_factory=list, description="replicas of one endpoint")
    model: str | None = Field(None, description="model id sent to the upstream")
    api_key_env: str | None = None
    location: Literal["local", "external"] | None = None


class RuleSpec(_Strict):
    """``when`` fields all have to hold for the rule to fire; unset ones are ignored."""

    name: str = Field(min_length=1)
    pii: bool | None = Field(None, description="the prompt contains private data (or not)")
    pii_types: list[str] | None = Field(None, min_length=1, description="...of these types")
    min_prompt_tokens: int | None = Field(None, ge=0)
    max_prompt_tokens: int | None = Field(None, ge=0)
    tags: list[str] | None = Field(None, min_length=1, description="any of these x-duet-tags")
    teams: list[str] | None = Field(None, min_length=1)
    keys: list[str] | None = Field(None, min_length=1)
    max_time_budget_ms: int | None = Field(
        None, gt=0, description="the request's x-duet-time-budget-ms is at most this"
    )
    targets: list[str] | None = Field(
        None, min_length=1, description="default: the route's targets"
    )
    privacy: PrivacyAction | None = Field(None, description="default: the route's on_pii")


class RouteSpec(_Strict):
    targets: list[str] = Field(min_length=1, description="default targets, in fallback order")
    rules: list[RuleSpec] = Field(default_factory=list)
    on_pii: PrivacyAction = "route_local"
    over_budget: OverBudget = "reject"
    local: list[str] | None = Field(
        None,
        min_length=1,
        description="where route_local and downgrade go when the chosen targets have no "
        "local one (default: the route's local targets)",
    )


class GatewaySpec(_Strict):
    upstreams: dict[str, UpstreamSpec] = Field(default_factory=dict)
    routes: dict[str, RouteSpec] = Field(default_factory=dict)
    keys: dict[str, KeySpec] = Field(default_factory=dict)
    teams: dict[str, TeamSpec] = Field(default_factory=dict)
    audit_url: str | None = Field(None, description="sqlite path/URL or postgresql:// URL")
    pii_types: list[str] | None = Field(None, description="types to detect (default: all)")
    retries: int = Field(2, ge=0, le=10, description="retries per target before falling back")
    backoff_s: float = Field(0.1, ge=0, le=30, description="first retry delay; doubles each time")
    connect_timeout_s: float = Field(5.0, gt=0)
    first_byte_timeout_s: float = Field(120.0, gt=0, description="upstream reply or first token")
    idle_timeout_s: float = Field(120.0, gt=0, description="longest pause inside a stream")
    breaker_failures: int = Field(3, ge=1, description="consecutive failures that open it")
    breaker_reset_s: float = Field(30.0, gt=0, description="how long an open breaker waits")
    health_interval_s: float = Field(10.0, ge=0, description="0 turns health checks off")
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)
