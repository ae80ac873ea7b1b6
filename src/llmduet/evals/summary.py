"""From per-case records to the numbers a reviewer checks: quality with intervals, paired
differences, latency percentiles, cost and the break-even volume.

Latency follows vLLM's ``bench serve`` and NVIDIA GenAI-Perf: TTFT to the first
non-empty output, ITL the gaps between output chunks (pooled over all requests), TPOT
``(E2E - TTFT) / (output tokens - 1)`` per request, E2E the whole call.

Break-even: an API model costs its measured mean cost per request at any volume. A
self-hosted model costs its machine (``hardware_usd_per_hour`` x 730 hours a month) per
machine needed, a machine serving at most ``730 h / mean E2E`` requests a month (one at a
time: a conservative bound, batching raises it). Self-hosting pays from the volume where
one machine's month costs what the API charges for it, provided one machine can carry it
(otherwise each added machine is as dear per request as the first, and it never pays).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from llmduet.evals.stats import (
    bootstrap_mean,
    bradley_terry_intervals,
    paired_difference,
    percentiles,
    win_rate,
)

HOURS_PER_MONTH = 730.0
VOLUMES = [int(v) for v in np.logspace(2, 8, 25)]  # requests a month, for the curve


def _values(records: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in records if r.get(key) is not None]


def latency(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    gaps = [gap for r in records for gap in r.get("itl_s") or []]
    table = {
        "ttft_ms": _values(records, "ttft_s"),
        "itl_ms": gaps,
        "tpot_ms": _values(records, "tpot_s"),
        "e2e_ms": _values(records, "total_s"),
    }
    return {name: percentiles([v * 1000 for v in values]) for name, values in table.items()}


def quality(records: list[dict[str, Any]], metrics: list[str]) -> dict[str, dict[str, float]]:
    return {
        metric: bootstrap_mean([r["metrics"].get(metric) for r in records]).to_dict()
        for metric in metrics
    }


def comparisons(
    by_model: dict[str, list[dict[str, Any]]], metrics: list[str]
) -> list[dict[str, Any]]:
    """For each pair of models and metric: the paired difference over shared cases."""
    rows = []
    for (a, a_records), (b, b_records) in itertools.combinations(by_model.items(), 2):
        b_by_case = {r["case_id"]: r for r in b_records}
        for metric in metrics:
            pairs = [
                (r["metrics"].get(metric), b_by_case[r["case_id"]]["metrics"].get(metric))
                for r in a_records
                if r["case_id"] in b_by_case
            ]
            pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
            if len(pairs) < 2:
                continue
            test = paired_difference([x for x, _ in pairs], [y for _, y in pairs])
            wins = sum(x > y for x, y in pairs) + 0.5 * sum(x == y for x, y in pairs)
            rows.append(
                {
                    "a": a,
                    "b": b,
                    "metric": metric,
                    "win_rate_a": wins / len(pairs),
                    **test.to_dict(),
                }
            )
    return rows


def cost(records: list[dict[str, Any]], usd_per_hour: float | None) -> dict[str, Any]:
    costs = _values(records, "cost_usd")
    e2e = _values(records, "total_s")
    mean_e2e = float(np.mean(e2e)) if e2e else None
    return {
        "total_usd": float(sum(costs)) if costs else None,
        "per_request_usd": float(np.mean(costs)) if costs else None,
        "usd_per_hour": usd_per_hour,
        "capacity_per_month": HOURS_PER_MONTH * 3600 / mean_e2e if mean_e2e else None,
    }


def self_hosted_monthly(volume: float, usd_per_hour: float, capacity: float) -> float:
    machines = max(1, math.ceil(volume / capacity))
    return machines * usd_per_hour * HOURS_PER_MONTH


def break_even(api: dict[str, Any], local: dict[str, Any]) -> dict[str, Any] | None:
    """The monthly volume from which ``local`` is cheaper than ``api``, and the curve."""
    per_request, rate, capacity = (
        api.get("per_request_usd"),
        local.get("usd_per_hour"),
        local.get("capacity_per_month"),
    )
    if not per_request or rate is None or not capacity:
        return None
    machine_month = rate * HOURS_PER_MONTH
    volume = machine_month / per_request
    return {
        "break_even_requests_per_month": volume if volume <= capacity else None,
        "machine_usd_per_month": machine_month,
        "curve": [
            {
                "requests_per_month": v,
                "api_usd": v * per_request,
                "self_hosted_usd": self_hosted_monthly(v, rate, capacity),
            }
            for v in VOLUMES
        ],
    }


def summarise(
    records: list[dict[str, Any]],
    models: list[str],
    locations: Mapping[str, str],
    hardware: Mapping[str, float | None],
) -> dict[str, Any]:
    by_model = {m: [r for r in records if r["model"] == m] for m in models}
    metrics = sorted({name for r in records for name in (r.get("metrics") or {})})
    per_model: dict[str, dict[str, Any]] = {}
    for model, rows in by_model.items():
        ok = [r for r in rows if not r.get("error")]
        per_model[model] = {
            "location": locations.get(model),
            "cases": len(rows),
            "errors": len(rows) - len(ok),
            "quality": quality(ok, metrics),
            "latency": latency(ok),
            "cost": cost(ok, hardware.get(model)),
            "output_tokens": int(sum(_values(ok, "output_tokens"))),
        }
    even = []
    for api, local in itertools.product(models, models):
        if locations.get(api) == "external" and locations.get(local) == "local":
            analysis = break_even(per_model[api]["cost"], per_model[local]["cost"])
            if analysis:
                even.append({"api": api, "self_hosted": local, **analysis})
    return {
        "metrics": metrics,
        "models": per_model,
        "comparisons": comparisons(by_model, metrics),
        "break_even": even,
    }


def pairwise_summary(comparisons: list[dict[str, Any]]) -> dict[str, Any]:
    """Win rates per pair and Bradley-Terry scores over all head-to-head verdicts."""
    judged = [c for c in comparisons if c.get("outcome") is not None]
    pairs = []
    for (a, b), group in itertools.groupby(
        sorted(judged, key=lambda c: (c["a"], c["b"])), key=lambda c: (c["a"], c["b"])
    ):
        rows = list(group)
        pairs.append(
            {
                "a": a,
                "b": b,
                "win_rate_a": win_rate([r["outcome"] for r in rows]).to_dict(),
                "consistent_share": sum(r["consistent"] for r in rows) / len(rows),
            }
        )
    scores = bradley_terry_intervals([(c["a"], c["b"], c["outcome"]) for c in judged])
    return {
        "pairs": pairs,
        "bradley_terry": {model: interval.to_dict() for model, interval in scores.items()},
        "unjudged": len(comparisons) - len(judged),
    }
