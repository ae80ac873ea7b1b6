"""Fuzz ``duet serve`` from its own OpenAPI schema: no input may produce a 5xx."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode

from llmduet.serve import ServeConfig, create_app
from llmduet.testing import LiveServer

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[LiveServer]:
    # A small window and output cap keep each generated request to a few tokens.
    app = create_app(
        ServeConfig(
            max_concurrency=2,
            queue=8,
            context=96,
            threads=2,
            default_max_tokens=4,
            max_body_bytes=256 * 1024,
        )
    )
    with LiveServer(app) as running:
        deadline = time.monotonic() + 60
        while httpx.get(f"{running.url}/health").status_code != 200:
            assert time.monotonic() < deadline, "server never became healthy"
            time.sleep(0.05)
        yield running


def test_no_input_makes_a_server_error(fuzz_server: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/chat/completions", "POST /v1/embeddings"}
    for operation, mode in itertools.product(operations, GenerationMode):
        if mode is GenerationMode.NEGATIVE and operation.method.upper() != "POST":
            continue  # nothing to get wrong in a GET without parameters

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call(base_url=fuzz_server.url, timeout=60)
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(f"{response.status_code} {case.as_curl_command()}: {response.text}")

        fuzz()
    assert not failures, "\n".join(failures[:5])
    # The fuzzer reached the model, not only the validators.
    assert statuses[200] > 0 and statuses[400] > 0, statuses
