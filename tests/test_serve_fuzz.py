"""Fuzz ``duet serve`` from its own OpenAPI schema: no input may produce a 5xx."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from fuzzing import fuzz_for_server_errors
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
    statuses = fuzz_for_server_errors(fuzz_server.url, max_examples=40, timeout_s=60)
    # The fuzzer reached the model, not only the validators.
    assert statuses[200] > 0 and statuses[400] > 0, statuses
