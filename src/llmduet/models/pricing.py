"""What a call costs.

API models are priced from exact token usage and a per-model table (USD per 1M input and
output tokens, editable under ``[pricing]`` in ``duet.toml``). Self-hosted models are
priced from the machine: ``usd_per_hour`` (per model) or ``hardware_usd_per_hour``
(global) times the measured wall time of the call.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmduet.config import ModelSpec, Settings, TokenPrice

#: The date the built-in API prices were taken from OpenAI's published price list.
PRICES_AS_OF = "2025-08-07"

#: USD per 1M tokens (input, output), standard tier, as published on PRICES_AS_OF.
BUILTIN_PRICES: dict[str, TokenPrice] = {
    name: TokenPrice(input=inp, output=out)
    for name, (inp, out) in {
        "gpt-5": (1.25, 10.00),
        "gpt-5-mini": (0.25, 2.00),
        "gpt-5-nano": (0.05, 0.40),
        "gpt-4.1": (2.00, 8.00),
        "gpt-4.1-mini": (0.40, 1.60),
        "gpt-4.1-nano": (0.10, 0.40),
        "gpt-4o": (2.50, 10.00),
        "gpt-4o-mini": (0.15, 0.60),
        "o3": (2.00, 8.00),
        "o3-mini": (1.10, 4.40),
        "o4-mini": (1.10, 4.40),
        "gpt-3.5-turbo": (0.50, 1.50),
    }.items()
}


@dataclass(frozen=True, slots=True)
class CostModel:
    """Turns one call's usage and wall time into USD; ``None`` when no price is known."""

    token_price: TokenPrice | None = None
    usd_per_hour: float | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int, seconds: float) -> float | None:
        if self.usd_per_hour is not None:
            return self.usd_per_hour * seconds / 3600.0
        if self.token_price is not None:
            price = self.token_price
            return (prompt_tokens * price.input + completion_tokens * price.output) / 1e6
        return None

    @property
    def basis(self) -> str:
        if self.usd_per_hour is not None:
            return f"hardware ${self.usd_per_hour:g}/hour"
        if self.token_price is not None:
            price = self.token_price
            return f"${price.input:g}/${price.output:g} per 1M in/out tokens"
        return "no price known"


def find_token_price(model: str, table: dict[str, TokenPrice]) -> TokenPrice | None:
    """Exact match, else the longest table key the model id starts with.

    Dated snapshots such as ``gpt-4o-mini-2024-07-18`` share their family's price.
    """
    if model in table:
        return table[model]
    matches = [key for key in table if model.startswith(key + "-")]
    return table[max(matches, key=len)] if matches else None


def cost_model_for(spec: ModelSpec, settings: Settings) -> CostModel:
    if spec.resolved_location == "local":
        rate = (
            spec.usd_per_hour if spec.usd_per_hour is not None else settings.hardware_usd_per_hour
        )
        return CostModel(usd_per_hour=rate)
    if spec.usd_per_hour is not None:
        return CostModel(usd_per_hour=spec.usd_per_hour)
    table = {**BUILTIN_PRICES, **settings.pricing}
    return CostModel(token_price=find_token_price(spec.model or "", table))
