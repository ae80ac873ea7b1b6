"""Prometheus metrics of one gateway (its own registry, so several can coexist in tests)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "duet_gateway_requests",
            "requests by route, target, location and status code",
            ["route", "target", "location", "status"],
            registry=r,
        )
        self.overhead = Histogram(
            "duet_gateway_overhead_seconds",
            "time the gateway spends on a request before it goes upstream",
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "duet_gateway_request_duration_seconds",
            "end-to-end time of requests",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.attempts = Counter(
            "duet_gateway_upstream_attempts",
            "upstream attempts by upstream and outcome",
            ["upstream", "outcome"],
            registry=r,
        )
        self.pii = Counter(
            "duet_gateway_pii_requests",
            "requests with private data, by type and action taken",
            ["type", "action"],
            registry=r,
        )
        self.budget_refusals = Counter(
            "duet_gateway_budget_refusals",
            "requests over a budget, by limit and what was done",
            ["limit", "outcome"],
            registry=r,
        )
        self.tokens = Counter(
            "duet_gateway_tokens",
            "tokens by upstream and kind",
            ["upstream", "kind"],
            registry=r,
        )
        self.cost = Counter("duet_gateway_cost_usd", "spend by upstream", ["upstream"], registry=r)
        self.replicas_up = Gauge(
            "duet_gateway_replicas_usable",
            "replicas that are healthy with a closed circuit, by upstream",
            ["upstream"],
            registry=r,
        )

    def track_replicas(self, upstream: str, usable: Callable[[], int]) -> None:
        self.replicas_up.labels(upstream).set_function(usable)

    def render(self) -> bytes:
        return generate_latest(self.registry)
