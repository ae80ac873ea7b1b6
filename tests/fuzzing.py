"""Fuzzing a server from its own OpenAPI schema, shared by ``duet serve`` and the gateway."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode

REQUIRED = {"POST /v1/chat/completions", "POST /v1/embeddings"}


def fuzz_for_server_errors(
    url: str,
    *,
    max_examples: int,
    timeout_s: float,
    headers: dict[str, str] | None = None,
    prepare: Callable[[Any], None] = lambda body: None,
) -> Counter[int]:
    """Send generated valid and invalid requests to every operation of ``url``'s
    ``/openapi.json``; fail on any 5xx; return the count of each status seen.
    ``prepare`` may adjust a generated body in place before it is sent."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert {op.label for op in operations} >= REQUIRED
    for operation, mode in itertools.product(operations, GenerationMode):
        if mode is GenerationMode.NEGATIVE and operation.method.upper() != "POST":
            continue  # nothing to get wrong in a GET without parameters

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=max_examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: schemathesis.Case) -> None:
            prepare(case.body)
            response = case.call(base_url=url, headers=headers, timeout=timeout_s)
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(f"{response.status_code} {case.as_curl_command()}: {response.text}")

        fuzz()
    assert not failures, "\n".join(failures[:5])
    return statuses
