from __future__ import annotations

import pytest

from llmduet.config import ModelSpec, TokenPrice, load_settings
from llmduet.models.pricing import BUILTIN_PRICES, CostModel, cost_model_for, find_token_price


def test_api_cost_from_exact_usage() -> None:
    model = CostModel(token_price=TokenPrice(input=0.15, output=0.60))
    assert model.cost(1_000_000, 0, 3.0) == pytest.approx(0.15)
    assert model.cost(1000, 500, 3.0) == pytest.approx((1000 * 0.15 + 500 * 0.60) / 1e6)


def test_hardware_cost_from_measured_time() -> None:
    assert CostModel(usd_per_hour=3.6).cost(10, 10, 2.0) == pytest.approx(0.002)


def test_dated_snapshots_share_the_family_price() -> None:
    assert (
        find_token_price("gpt-4o-mini-2024-07-18", BUILTIN_PRICES) == BUILTIN_PRICES["gpt-4o-mini"]
    )
    assert find_token_price("gpt-4o-2024-08-06", BUILTIN_PRICES) == BUILTIN_PRICES["gpt-4o"]
    assert find_token_price("llama-3", BUILTIN_PRICES) is None


def test_cost_model_by_location_and_overrides() -> None:
    settings = load_settings(
        hardware_usd_per_hour=0.2, pricing={"gpt-4o-mini": {"input": 1, "output": 2}}
    )
    local = cost_model_for(ModelSpec(provider="llamacpp"), settings)
    assert local.usd_per_hour == 0.2
    api = cost_model_for(ModelSpec(provider="openai", model="gpt-4o-mini"), settings)
    assert api.token_price == TokenPrice(input=1, output=2)
    served = ModelSpec(provider="openai", model="x", base_url="http://localhost:8000/v1")
    assert cost_model_for(served, settings).usd_per_hour == 0.2
    unknown = cost_model_for(ModelSpec(provider="openai", model="mystery"), settings)
    assert unknown.cost(10, 10, 1.0) is None
    assert unknown.basis == "no price known"
