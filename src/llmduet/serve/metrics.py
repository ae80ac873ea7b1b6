"""Prometheus metrics of one server (its own registry, so several apps can coexist)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "duet_requests",
            "HTTP requests by endpoint and status code",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "duet_time_to_first_token_seconds",
            "time to first token of chat completions",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.e2e = Histogram(
            "duet_request_duration_seconds",
            "end-to-end time of chat completions",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.output_tokens = Counter(
            "duet_output_tokens", "generated tokens", registry=self.registry
        )
        self.queue_depth = Gauge(
            "duet_queue_depth", "requests waiting for a sequence slot", registry=self.registry
        )
        self.active_sequences = Gauge(
            "duet_active_sequences", "sequences being decoded", registry=self.registry
        )

    def track_engine(self, queue_depth: Callable[[], int], active: Callable[[], int]) -> None:
        self.queue_depth.set_function(queue_depth)
        self.active_sequences.set_function(active)

    def observe(self, ttft_s: float | None, total_s: float, output_tokens: int) -> None:
        if ttft_s is not None:
            self.ttft.observe(ttft_s)
        self.e2e.observe(total_s)
        self.output_tokens.inc(output_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
