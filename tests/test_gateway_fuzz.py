"""Fuzz the gateway from its own OpenAPI schema: no input may produce a 5xx.

The upstream answers 200 to anything (chat completions, streamed or not, and
embeddings), so a 502 or 503 could only come from the gateway itself, not from an
upstream rejecting a strange request. Generated bodies mostly name the gateway's route
(a random ``model`` would only ever meet the 404), and every request carries a valid
key, so the fuzzer gets past authentication and routing to the privacy guard, the
forwarding and the relay.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode

from gateway_helpers import ALICE, EmbeddingServer, Running, running, upstream, write_config


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, EmbeddingServer]]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    with EmbeddingServer() as cloud, EmbeddingServer() as home:
        ups = {
            "cloud": upstream(cloud, model="gpt-4o-mini", location="external"),
            "home": upstream(home, model="llama"),
        }
        # pseudonymise exercises masking and restoring; route_local embeddings stay home
        routes = {"r": {"targets": ["cloud", "home"], "on_pii": "pseudonymise"}}
        path = write_config(
            ups,
            routes,
            gateway={"audit_url": str(folder / "audit.db"), "max_body_bytes": 256 * 1024},
            path=str(folder / "duet.toml"),
        )
        with running(str(path)) as gateway:
            yield gateway, cloud


def test_no_input_makes_a_server_error(fuzzed: tuple[Running, EmbeddingServer]) -> None:
    gateway, cloud = fuzzed
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert {op.label for op in operations} >= {"POST /v1/chat/completions", "POST /v1/embeddings"}
    chooser = random.Random(7)
    for operation, mode in itertools.product(operations, GenerationMode):
        if mode is GenerationMode.NEGATIVE and operation.method.upper() != "POST":
            continue  # nothing to get wrong in a GET without parameters

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def fuzz(case: schemathesis.Case) -> None:
            body = case.body
            if isinstance(body, dict) and isinstance(body.get("model"), str):
                body["model"] = "r" if chooser.random() < 0.8 else body["model"]
            response = case.call(
                base_url=gateway.url, headers={"Authorization": f"Bearer {ALICE}"}, timeout=30
            )
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(f"{response.status_code} {case.as_curl_command()}: {response.text}")

        fuzz()
    assert not failures, "\n".join(failures[:5])
    # The fuzzer reached the upstream, not only the validators.
    assert statuses[200] > 0 and statuses[400] > 0, statuses
    assert cloud.requests, "no generated request was forwarded"
