"""Fuzz the gateway from its own OpenAPI schema: no input may produce a 5xx.

The upstream answers 200 to anything (chat completions, streamed or not, and
embeddings), so a 502 or 503 could only come from the gateway itself, not from an
upstream rejecting a strange request. Generated bodies mostly name the gateway's route
(a random ``model`` would only ever meet the 404), and every request carries a valid
key, so the fuzzer gets past authentication and routing to the privacy guard, the
forwarding and the relay.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzzing import fuzz_for_server_errors
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
    chooser = random.Random(7)

    def name_the_route(body: object) -> None:
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            body["model"] = "r" if chooser.random() < 0.8 else body["model"]

    statuses = fuzz_for_server_errors(
        gateway.url,
        max_examples=60,
        timeout_s=30,
        headers={"Authorization": f"Bearer {ALICE}"},
        prepare=name_the_route,
    )
    # The fuzzer reached the upstream, not only the validators.
    assert statuses[200] > 0 and statuses[400] > 0, statuses
    assert cloud.requests, "no generated request was forwarded"
