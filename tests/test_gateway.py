"""The hybrid gateway end to end: routing, privacy actions, failover, load balancing,
circuit breaker, health checks, streams, budgets, API surface, config errors, audit.

Every test runs a real gateway (uvicorn on 127.0.0.1) in front of scripted
OpenAI-compatible upstreams on real sockets, and talks to it with the official SDK or
httpx; assertions look at which upstream received what and at the audit rows.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway_helpers import (
    ALICE,
    BOB,
    DAVE,
    EmbeddingServer,
    Running,
    Scripted,
    TcpRecorder,
    closed_port_url,
    content_of,
    external,
    gateway_for,
    running,
    upstream,
    write_config,
)
from llmduet.config import load_settings
from llmduet.errors import ConfigError
from llmduet.gateway.service import Gateway
from llmduet.testing import Reply, ScriptedOpenAIServer, ToolCallReply

EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"
PHONE = "+1-212-555-0142"
PII_PROMPT = f"Write to {EMAIL}, call {PHONE} and charge card {CARD}."


@pytest.fixture
def a() -> Iterator[ScriptedOpenAIServer]:
    with Scripted() as running_server:
        yield running_server


@pytest.fixture
def b() -> Iterator[ScriptedOpenAIServer]:
    with Scripted() as running_server:
        yield running_server


@pytest.fixture
def c() -> Iterator[ScriptedOpenAIServer]:
    with Scripted() as running_server:
        yield running_server


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The OpenAI error object of a response, checking its shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) >= {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    return error


def contents(server: ScriptedOpenAIServer) -> list[str]:
    """The last user message of each request a scripted upstream received."""
    return [request["messages"][-1]["content"] for request in server.requests]


# ---- routing -------------------------------------------------------------------------------


def test_rules_apply_in_order_and_the_first_that_holds_wins(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer, c: ScriptedOpenAIServer
) -> None:
    rules = [
        {"name": "first", "tags": ["x"], "targets": ["A"]},
        {"name": "second", "tags": ["x", "y"], "targets": ["B"]},
    ]
    ups = {"A": upstream(a), "B": upstream(b), "C": upstream(c)}
    with gateway_for(ups, {"r": {"targets": ["C"], "rules": rules}}) as gw:
        assert gw.chat("one", headers={"x-duet-tags": "x"}).status_code == 200
        assert gw.chat("two", headers={"x-duet-tags": "y"}).status_code == 200
        assert gw.chat("three", headers={"x-duet-tags": "y, x"}).status_code == 200
        assert gw.chat("four").status_code == 200
        rows = gw.records()
    assert contents(a) == ["one", "three"]
    assert contents(b) == ["two"]
    assert contents(c) == ["four"]
    assert [(r.rule, r.target, r.location) for r in rows] == [
        ("first", "A", "local"),
        ("second", "B", "local"),
        ("first", "A", "local"),
        ("default", "C", "local"),
    ]


LONG = "word " * 200  # about 250 estimated tokens


# (rule conditions, request that makes it fire, request that does not)
CONDITIONS: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "pii": ({"pii": True}, {"content": f"mail {EMAIL}"}, {"content": "no secrets here"}),
    "no-pii": ({"pii": False}, {"content": "no secrets here"}, {"content": f"mail {EMAIL}"}),
    "pii_types": (
        {"pii_types": ["CREDIT_CARD"]},
        {"content": f"card {CARD}"},
        {"content": f"mail {EMAIL}"},
    ),
    "min_prompt_tokens": ({"min_prompt_tokens": 100}, {"content": LONG}, {"content": "short"}),
    "max_prompt_tokens": ({"max_prompt_tokens": 20}, {"content": "short"}, {"content": LONG}),
    "tags": (
        {"tags": ["batch"]},
        {"headers": {"x-duet-tags": "other, batch"}},
        {"headers": {"x-duet-tags": "other"}},
    ),
    "teams": ({"teams": ["ops"]}, {"key": BOB}, {"key": ALICE}),
    "keys": ({"keys": ["alice"]}, {"key": ALICE}, {"key": BOB}),
    "max_time_budget_ms": (
        {"max_time_budget_ms": 500},
        {"headers": {"x-duet-time-budget-ms": "200"}},
        {"headers": {"x-duet-time-budget-ms": "1000"}},
    ),
}


@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_each_rule_condition_routes_to_its_target(
    condition: str, a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    when, fires, misses = CONDITIONS[condition]
    rule = {"name": "special", "privacy": "allow", "targets": ["A"], **when}
    ups = {"A": upstream(a, model="model-a"), "B": upstream(b, model="model-b")}
    with gateway_for(ups, {"r": {"targets": ["B"], "rules": [rule]}}) as gw:
        assert gw.chat(**{"content": "hit", **fires}).status_code == 200
        assert gw.chat(**{"content": "miss", **misses}).status_code == 200
        if condition == "max_time_budget_ms":  # no header: no budget, the rule does not hold
            assert gw.chat("no budget").status_code == 200
        rows = gw.records()
    assert len(a.requests) == 1 and a.requests[0]["model"] == "model-a"
    assert len(b.requests) == len(rows) - 1
    assert all(request["model"] == "model-b" for request in b.requests)
    assert [(r.rule, r.target, r.location) for r in rows[:2]] == [
        ("special", "A", "local"),
        ("default", "B", "local"),
    ]
    if condition in ("pii", "pii_types"):
        assert rows[0].privacy_action == "allow"


def test_rule_tags_match_whatever_their_case(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    """The gateway lower-cases the client's x-duet-tags, so a rule written with a capital
    letter has to match them too (or be lower-cased when loaded)."""
    rule = {"name": "batch", "tags": ["Batch"], "targets": ["A"]}
    with gateway_for(
        {"A": upstream(a), "B": upstream(b)}, {"r": {"targets": ["B"], "rules": [rule]}}
    ) as gw:
        assert gw.chat("x", headers={"x-duet-tags": "Batch"}).status_code == 200
        row = gw.last()
    assert (row.rule, row.target) == ("batch", "A"), "a rule tag with a capital never matches"
    assert len(a.requests) == 1


def test_upstream_gets_its_model_id_unknown_fields_and_its_own_key_only(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPSTREAM_A_KEY", "up-secret-a")
    ups = {
        "A": upstream(a, model="llama-3.1-8b-instruct", api_key_env="UPSTREAM_A_KEY"),
        "B": upstream(b, model="qwen"),
    }
    extra = {
        "duet_unknown_field": {"nested": [1, "two", None], "flag": True},
        "seed": 7,
        "logit_bias": {"50256": -100},
        "metadata": {"ticket": "T-1"},
    }
    with gateway_for(ups, {"r": {"targets": ["A"]}, "s": {"targets": ["B"]}}) as gw:
        client = gw.client()
        reply = client.chat.completions.create(
            model="r", messages=[{"role": "user", "content": "hi"}], extra_body=extra
        )
        assert reply.choices[0].message.content == "Hello from the scripted server."
        client.chat.completions.create(model="s", messages=[{"role": "user", "content": "hi"}])
    sent = a.requests[0]
    assert sent["model"] == "llama-3.1-8b-instruct"
    for field, value in extra.items():
        assert sent[field] == value
    assert a.headers[0]["authorization"] == "Bearer up-secret-a"
    assert b.requests[0]["model"] == "qwen"
    assert "authorization" not in b.headers[0]  # no api_key_env: no Authorization at all
    for headers in a.headers + b.headers:
        assert ALICE not in json.dumps(headers)


# ---- privacy actions ---------------------------------------------------------------------


def privacy_gateway(
    cloud: ScriptedOpenAIServer, home: ScriptedOpenAIServer, action: str, **route: Any
) -> Any:
    ups = {"cloud": external(cloud, model="gpt-4o-mini"), "home": upstream(home, model="llama")}
    return gateway_for(ups, {"r": {"targets": ["cloud", "home"], "on_pii": action, **route}})


def test_route_local_keeps_private_data_on_local_upstreams(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    cloud, home = a, b
    with privacy_gateway(cloud, home, "route_local") as gw:
        assert gw.chat(PII_PROMPT).status_code == 200
        assert gw.chat("What is the capital of France?").status_code == 200
        rows = gw.records()
    assert contents(home) == [PII_PROMPT]
    assert contents(cloud) == ["What is the capital of France?"]
    assert (rows[0].target, rows[0].location, rows[0].privacy_action) == (
        "home",
        "local",
        "route_local",
    )
    assert rows[0].pii_types == ("CREDIT_CARD", "EMAIL", "PHONE")
    assert (rows[1].target, rows[1].location, rows[1].privacy_action) == ("cloud", "external", None)


def test_route_local_never_falls_back_to_an_external_upstream(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    cloud, home = a, b
    home.default = Reply(status=503, error_message="home is overloaded")
    with privacy_gateway(cloud, home, "route_local") as gw:
        response = gw.chat(PII_PROMPT)
        row = gw.last()
    assert response.status_code == 502
    assert error_of(response)["code"] == "upstream_unavailable"
    assert cloud.requests == []
    assert len(home.requests) == 3  # tried and retried, but only at home
    assert (row.status, row.target, row.privacy_action) == (502, "home", "route_local")


def test_pseudonymise_sends_placeholders_out_and_restores_real_values(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    cloud, home = a, b
    echo = "Done: wrote <EMAIL_1>, rang <PHONE_1>, charged <CREDIT_CARD_1>."
    real = f"Done: wrote {EMAIL}, rang {PHONE}, charged {CARD}."
    cloud.queue(Reply.text(echo))
    # streamed, with placeholders split across chunks
    cloud.queue(Reply(chunks=[echo[i : i + 4] for i in range(0, len(echo), 4)]))
    with privacy_gateway(cloud, home, "pseudonymise") as gw:
        client = gw.client()
        messages = [{"role": "user", "content": PII_PROMPT}]
        reply = client.chat.completions.create(model="r", messages=messages)
        stream = client.chat.completions.create(model="r", messages=messages, stream=True)
        streamed = "".join(
            chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices
        )
        rows = gw.records()
    assert reply.choices[0].message.content == real
    assert streamed == real
    assert home.requests == []
    assert len(cloud.requests) == 2
    for sent in cloud.requests:
        text = json.dumps(sent)
        assert sent["messages"][0]["content"] == (
            "Write to <EMAIL_1>, call <PHONE_1> and charge card <CREDIT_CARD_1>."
        )
        for value in (EMAIL, PHONE, CARD):
            assert value not in text
    assert [(r.target, r.privacy_action, r.stream) for r in rows] == [
        ("cloud", "pseudonymise", False),
        ("cloud", "pseudonymise", True),
    ]


def test_pseudonymised_tool_call_arguments_are_restored(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    cloud, home = a, b
    masked = json.dumps({"to": "<EMAIL_1>", "card": "<CREDIT_CARD_1>"})
    real = json.loads(json.dumps({"to": EMAIL, "card": CARD}))
    call = ToolCallReply(name="pay", arguments=masked)
    cloud.queue(Reply(chunks=[], tool_calls=[call]), Reply(chunks=[], tool_calls=[call]))
    with privacy_gateway(cloud, home, "pseudonymise") as gw:
        plain = gw.chat(f"pay {CARD} and mail {EMAIL}")
        events = gw.stream_events(f"pay {CARD} and mail {EMAIL}")
    message = plain.json()["choices"][0]["message"]
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == real
    arguments = "".join(
        call.get("function", {}).get("arguments") or ""
        for event in events[:-1]
        for choice in json.loads(event)["choices"]
        for call in choice["delta"].get("tool_calls") or []
    )
    assert json.loads(arguments) == real
    assert all(EMAIL not in json.dumps(r) and CARD not in json.dumps(r) for r in cloud.requests)


def test_block_refuses_private_data_and_sends_nothing(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    cloud, home = a, b
    with privacy_gateway(cloud, home, "block") as gw:
        response = gw.chat(f"mail {EMAIL} about card {CARD}")
        fine = gw.chat("nothing private")
        rows = gw.records()
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "private_data_blocked"
    assert "EMAIL" in error["message"] and "CREDIT_CARD" in error["message"]
    assert EMAIL not in error["message"] and CARD not in error["message"]
    assert fine.status_code == 200
    assert contents(cloud) == ["nothing private"] and home.requests == []
    assert (rows[0].status, rows[0].privacy_action, rows[0].target) == (400, "block", None)


def test_allow_sends_private_data_as_it_is(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    cloud, home = a, b
    with privacy_gateway(cloud, home, "allow") as gw:
        assert gw.chat(PII_PROMPT).status_code == 200
        row = gw.last()
    assert contents(cloud) == [PII_PROMPT] and home.requests == []
    assert (row.target, row.location, row.privacy_action) == ("cloud", "external", "allow")


def test_a_rules_privacy_action_overrides_the_routes(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    cloud, home = a, b
    rules = [{"name": "cards", "pii_types": ["CREDIT_CARD"], "privacy": "block"}]
    with privacy_gateway(cloud, home, "allow", rules=rules) as gw:
        assert gw.chat(f"card {CARD}").status_code == 400
        assert gw.chat(f"mail {EMAIL}").status_code == 200
    assert contents(cloud) == [f"mail {EMAIL}"] and home.requests == []


# ---- failover ----------------------------------------------------------------------------


def two_targets(first: ScriptedOpenAIServer | str, second: ScriptedOpenAIServer | str, **gw: Any):
    return gateway_for(
        {"first": upstream(first), "second": upstream(second)},
        {"r": {"targets": ["first", "second"]}},
        gateway=gw or None,
    )


def test_a_500_is_retried_on_the_same_target(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    a.queue(Reply(status=500, error_message="boom"), Reply.text("second time lucky"))
    with two_targets(a, b) as gw:
        response = gw.chat("hi")
        row = gw.last()
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "second time lucky"
    assert len(a.requests) == 2 and b.requests == []
    assert (row.target, row.attempts, row.status) == ("first", 2, 200)


def test_a_429_is_retried_after_retry_after_ms(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    a.queue(Reply(status=429, retry_after_ms=400), Reply.text("ok now"))
    with two_targets(a, b) as gw:
        started = time.perf_counter()
        response = gw.chat("hi")
        elapsed = time.perf_counter() - started
        row = gw.last()
    assert response.status_code == 200 and row.attempts == 2
    assert len(a.requests) == 2 and b.requests == []
    assert elapsed >= 0.4, f"retried after {elapsed:.3f} s, before retry-after-ms (0.4 s)"


def test_a_persistent_503_falls_back_to_the_next_target(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    a.default = Reply(status=503, error_message="overloaded")
    b.queue(Reply.text("from the second"))
    with two_targets(a, b) as gw:
        response = gw.chat("hi")
        row = gw.last()
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "from the second"
    assert len(a.requests) == 3  # one try and two retries (retries = 2)
    assert len(b.requests) == 1
    assert (row.target, row.attempts) == ("second", 4)


def test_a_connect_error_falls_back(b: ScriptedOpenAIServer) -> None:
    with two_targets(closed_port_url(), b) as gw:
        response = gw.chat("hi")
        row = gw.last()
    assert response.status_code == 200
    assert len(b.requests) == 1 and row.target == "second"


@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_refusal_of_the_gateway_falls_back_without_retrying(
    status: int, a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    a.default = Reply(status=status, error_message="bad key or model")
    with two_targets(a, b) as gw:
        response = gw.chat("hi")
        row = gw.last()
    assert response.status_code == 200
    assert len(a.requests) == 1 and len(b.requests) == 1
    assert (row.target, row.attempts) == ("second", 2)


def test_a_400_from_the_upstream_is_the_clients(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    a.queue(Reply(status=400, error_message="temperature must be at most 2", error_code="bad_t"))
    with two_targets(a, b) as gw:
        with pytest.raises(openai.BadRequestError) as caught:
            gw.client().chat.completions.create(
                model="r", messages=[{"role": "user", "content": "hi"}], temperature=2
            )
        row = gw.last()
    assert caught.value.status_code == 400
    assert "temperature must be at most 2" in caught.value.message
    assert caught.value.code == "bad_t"
    assert len(a.requests) == 1 and b.requests == []
    assert row.status == 400


def test_every_target_failing_is_a_502_naming_each_failure(a: ScriptedOpenAIServer) -> None:
    a.default = Reply(status=503, error_message="first is overloaded")
    with two_targets(a, closed_port_url()) as gw:
        response = gw.chat("hi")
        row = gw.last()
    assert response.status_code == 502
    error = error_of(response)
    assert error["code"] == "upstream_unavailable" and error["type"] == "server_error"
    assert "first: 503 first is overloaded" in error["message"]
    assert "second:" in error["message"]
    assert (row.status, row.error, row.target) == (502, "upstream_unavailable", "second")


def test_an_upstream_slower_than_first_byte_timeout_falls_back(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    a.queue(Reply.text("too late", first_delay_s=1.0))
    with two_targets(a, b, retries=0, first_byte_timeout_s=0.2) as gw:
        started = time.perf_counter()
        response = gw.chat("hi")
        elapsed = time.perf_counter() - started
        row = gw.last()
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hello from the scripted server."
    assert (row.target, row.attempts) == ("second", 2)
    assert elapsed < 0.9


def test_an_upstream_whose_key_is_not_set_is_skipped_and_reported(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    ups = {"first": upstream(a, api_key_env="FIRST_UPSTREAM_KEY"), "second": upstream(b)}
    with gateway_for(ups, {"r": {"targets": ["first", "second"]}}) as gw:
        response = gw.chat("hi")
        row = gw.last()
        health = gw.http.get(gw.url + "/health").json()
    assert response.status_code == 200
    assert a.requests == [] and (row.target, row.attempts) == ("second", 1)
    assert health["upstreams"]["first"]["usable"] == 0
    assert any("FIRST_UPSTREAM_KEY" in p for p in health["upstreams"]["first"]["problems"])


# ---- load balancing ----------------------------------------------------------------------


def test_replicas_share_sequential_requests(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    with gateway_for({"pool": upstream(a, b)}, {"r": {"targets": ["pool"]}}) as gw:
        for i in range(10):
            assert gw.chat(f"q{i}").status_code == 200
    assert len(a.requests) + len(b.requests) == 10
    assert len(a.requests) >= 4 and len(b.requests) >= 4


def test_a_busy_replica_is_passed_over_for_an_idle_one(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    slow = Reply.text("slow", first_delay_s=1.5)
    a.queue(slow)
    b.queue(slow)
    with gateway_for({"pool": upstream(a, b)}, {"r": {"targets": ["pool"]}}) as gw:
        busy = threading.Thread(target=gw.chat, args=("slow one",))
        busy.start()
        deadline = time.monotonic() + 5
        while not (a.requests or b.requests):
            assert time.monotonic() < deadline, "the slow request never arrived"
            time.sleep(0.005)
        held, idle = (a, b) if a.requests else (b, a)
        idle.replies.clear()  # the idle replica answers at once from now on
        started = time.perf_counter()
        for i in range(4):
            assert gw.chat(f"fast {i}").status_code == 200
        elapsed = time.perf_counter() - started
        busy.join()
    assert contents(held) == ["slow one"]
    assert contents(idle) == [f"fast {i}" for i in range(4)]
    assert elapsed < 1.0


# ---- circuit breaker ---------------------------------------------------------------------


BREAKER = {"retries": 0, "breaker_failures": 2, "breaker_reset_s": 0.5}


def test_the_breaker_opens_skips_the_replica_then_lets_one_trial_close_it(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    a.default = Reply(status=503)
    with two_targets(a, b, **BREAKER) as gw:
        for i in range(2):
            assert gw.chat(f"failing {i}").status_code == 200  # served by the fallback
        assert len(a.requests) == 2
        for i in range(3):
            assert gw.chat(f"open {i}").status_code == 200
        assert len(a.requests) == 2, "an open breaker still let requests through"
        opened = gw.records()[-3:]
        assert all((r.target, r.attempts) == ("second", 1) for r in opened)
        time.sleep(0.6)
        a.default = Reply.text("recovered")
        trial = gw.chat("trial")
        after = gw.chat("after")
    assert trial.json()["choices"][0]["message"]["content"] == "recovered"
    assert after.json()["choices"][0]["message"]["content"] == "recovered"
    assert contents(a)[2:] == ["trial", "after"]


def test_a_failed_trial_opens_the_breaker_again(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    a.default = Reply(status=503)
    with two_targets(a, b, **BREAKER) as gw:
        gw.chat("1")
        gw.chat("2")
        time.sleep(0.6)
        gw.chat("trial")  # half open: one try, it fails
        gw.chat("skipped")
    assert contents(a) == ["1", "2", "trial"]
    assert contents(b) == ["1", "2", "trial", "skipped"]


# ---- health checks -----------------------------------------------------------------------


def wait_for(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.02)


def test_health_checks_take_a_dead_upstream_out_and_health_reports_it(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    with TcpRecorder(a.port) as to_a, TcpRecorder(b.port) as to_b:
        ups = {"first": upstream(to_a.base_url), "second": upstream(to_b.base_url)}
        routes = {"r": {"targets": ["first", "second"]}}
        with gateway_for(ups, routes, gateway={"health_interval_s": 0.1}) as gw:

            def health() -> httpx.Response:
                return gw.http.get(gw.url + "/health")

            ok = health()
            assert ok.status_code == 200
            body = ok.json()
            assert body == {
                "status": "ok",
                "routes_without_upstream": [],
                "upstreams": {
                    "first": {"location": "local", "replicas": 1, "usable": 1, "problems": []},
                    "second": {"location": "local", "replicas": 1, "usable": 1, "problems": []},
                },
            }
            to_a.stop()
            wait_for(lambda: health().json()["upstreams"]["first"]["usable"] == 0)
            first = health().json()["upstreams"]["first"]
            assert first["problems"] and "health check" in first["problems"][0]
            sent_before = len(a.requests)
            response = gw.chat("while first is down")
            row = gw.last()
            assert response.status_code == 200
            assert len(a.requests) == sent_before == 0
            assert (row.target, row.attempts) == ("second", 1)  # the dead one was not tried

            to_b.stop()
            wait_for(lambda: health().status_code == 503)
            down = health().json()
            assert down["status"] == "down" and down["routes_without_upstream"] == ["r"]
            refused = gw.chat("nobody home")
            assert refused.status_code == 503
            assert error_of(refused)["code"] == "upstream_unavailable"


# ---- streams -----------------------------------------------------------------------------


def test_a_stream_is_passed_through_in_order_and_ends_with_done(
    a: ScriptedOpenAIServer,
) -> None:
    a.queue(Reply(chunks=["Once", " upon", " a", " time"], prompt_tokens=11))
    with gateway_for({"A": upstream(a)}, {"r": {"targets": ["A"]}}) as gw:
        events = gw.stream_events("tell a story")
        row = gw.last()
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    deltas = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert deltas == ["", "Once", " upon", " a", " time", None]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert (row.stream, row.status, row.prompt_tokens, row.completion_tokens) == (True, 200, 11, 4)
    assert row.ttft_ms is not None


def test_the_usage_chunk_comes_only_when_the_client_asks_but_is_always_audited(
    a: ScriptedOpenAIServer,
) -> None:
    reply = Reply(chunks=["a", "b", "c"], prompt_tokens=123, completion_tokens=7)
    a.queue(reply, reply)
    with gateway_for({"A": upstream(a)}, {"r": {"targets": ["A"]}}) as gw:
        plain = gw.stream_events("x")
        asked = gw.stream_events("x", body={"stream_options": {"include_usage": True}})
        rows = gw.records()
    assert not any(b'"usage"' in e and b'"prompt_tokens"' in e for e in plain)
    usage = json.loads(asked[-2])
    assert usage["choices"] == [] and usage["usage"]["prompt_tokens"] == 123
    assert usage["usage"]["completion_tokens"] == 7
    for request in a.requests:  # the gateway always asks the upstream for usage
        assert request["stream_options"]["include_usage"] is True
    assert [(r.prompt_tokens, r.completion_tokens) for r in rows] == [(123, 7), (123, 7)]


def test_a_stream_failing_before_its_first_token_moves_on_transparently(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    # the role chunk, then the connection drops: no token was sent yet
    a.queue(*[Reply(chunks=["never"], break_after=0)] * 3)
    b.queue(Reply(chunks=["from", " b"]))
    with two_targets(a, b) as gw:
        events = gw.stream_events("hi")
        row = gw.last()
    assert events[-1] == b"[DONE]"
    assert content_of(events) == "from b"
    assert not any(b'"error"' in e for e in events)
    assert len(a.requests) == 3 and len(b.requests) == 1
    assert (row.target, row.status, row.attempts) == ("second", 200, 4)


def test_a_stream_that_breaks_after_its_first_token_ends_with_an_error_event(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    a.queue(Reply(chunks=["one", " two", " three"], break_after=1))
    with two_targets(a, b) as gw:
        events = gw.stream_events("hi")
        row = gw.last()
    assert events[-1] == b"[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "upstream_stream_interrupted"
    assert content_of(events[:-2]) == "one"
    assert len(a.requests) == 1 and b.requests == [], "the stream was restarted elsewhere"
    assert (row.status, row.error, row.target) == (502, "upstream_stream_interrupted", "first")


def test_the_sdk_sees_a_mid_stream_failure_as_an_error(a: ScriptedOpenAIServer) -> None:
    a.queue(Reply(chunks=["one", " two"], break_after=1))
    with gateway_for({"A": upstream(a)}, {"r": {"targets": ["A"]}}) as gw:
        stream = gw.client().chat.completions.create(
            model="r", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        seen = []
        with pytest.raises(openai.APIError) as caught:
            for chunk in stream:
                seen.append(chunk.choices[0].delta.content if chunk.choices else None)
    assert "one" in seen
    assert "failed mid-stream" in str(caught.value)


def test_a_stream_idle_longer_than_idle_timeout_ends_with_an_error_event(
    a: ScriptedOpenAIServer,
) -> None:
    a.queue(Reply(chunks=["first", " second"], chunk_delay_s=1.0))
    with gateway_for(
        {"A": upstream(a)}, {"r": {"targets": ["A"]}}, gateway={"idle_timeout_s": 0.2}
    ) as gw:
        started = time.perf_counter()
        events = gw.stream_events("hi")
        elapsed = time.perf_counter() - started
        row = gw.last()
    assert content_of(events[:-2]) == "first"
    assert json.loads(events[-2])["error"]["code"] == "upstream_stream_interrupted"
    assert events[-1] == b"[DONE]"
    assert elapsed < 0.9
    assert (row.status, row.error) == (502, "upstream_stream_interrupted")


def test_a_client_leaving_mid_stream_is_audited_and_frees_the_replica(
    a: ScriptedOpenAIServer,
) -> None:
    a.queue(Reply(chunks=["a", "b", "c", "d"], chunk_delay_s=0.3))
    with gateway_for({"A": upstream(a)}, {"r": {"targets": ["A"]}}) as gw:
        body = {"model": "r", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": f"Bearer {ALICE}"}
        with (
            httpx.Client(timeout=10) as leaving,
            leaving.stream(
                "POST", gw.base_url + "/chat/completions", json=body, headers=headers
            ) as response,
        ):
            for line in response.iter_lines():
                if '"content": "a"' in line or '"content":"a"' in line:
                    break
        wait_for(lambda: len(gw.records()) == 1)
        row = gw.last()
        replica = gw.gateway.upstreams["A"].replicas[0]
        assert replica.outstanding == 0
        assert replica.breaker.state == "closed"
    assert (row.status, row.error, row.stream) == (499, "client_disconnected", True)


# ---- budgets -----------------------------------------------------------------------------


@pytest.mark.parametrize("on", ["teams", "keys"])
def test_requests_per_minute_is_enforced_with_retry_after(on: str, a: ScriptedOpenAIServer) -> None:
    budget = {on: {"eng" if on == "teams" else "alice": {"requests_per_minute": 2}}}
    with gateway_for({"A": upstream(a)}, {"r": {"targets": ["A"]}}, **budget) as gw:
        assert gw.chat("1").status_code == 200
        assert gw.chat("2").status_code == 200
        refused = gw.chat("3")
        other = gw.chat("bob is on another team", key=BOB)
        row = gw.records()[2]
    assert refused.status_code == 429
    error = error_of(refused)
    assert error["code"] == "budget_exceeded"
    assert "2 requests per minute" in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 61
    assert other.status_code == 200
    assert contents(a) == ["1", "2", "bob is on another team"]
    assert (row.status, row.error, row.target) == (429, "budget_exceeded", None)


def test_a_team_budget_is_shared_by_its_keys_and_a_keys_own_applies_too(
    a: ScriptedOpenAIServer,
) -> None:
    teams = {"eng": {"requests_per_minute": 3}}
    keys = {"alice": {"requests_per_minute": 1}}
    with gateway_for({"A": upstream(a)}, {"r": {"targets": ["A"]}}, teams=teams, keys=keys) as gw:
        assert gw.chat("alice 1").status_code == 200
        assert gw.chat("alice 2").status_code == 429  # her own limit
        assert gw.chat("dave 1", key=DAVE).status_code == 200
        assert gw.chat("dave 2", key=DAVE).status_code == 200
        assert gw.chat("dave 3", key=DAVE).status_code == 429  # the team's three are used
        assert gw.chat("bob", key=BOB).status_code == 200
    assert contents(a) == ["alice 1", "dave 1", "dave 2", "bob"]


def test_a_failed_request_does_not_keep_its_token_reservation(a: ScriptedOpenAIServer) -> None:
    """Admission reserves prompt + max_tokens; a request that no upstream answered used
    no completion tokens, so its reservation must be given back (settled), not kept."""
    ups = {"dead": upstream(closed_port_url()), "A": upstream(a)}
    routes = {"down": {"targets": ["dead"]}, "up": {"targets": ["A"]}}
    teams = {"eng": {"tokens_per_minute": 1000}}
    with gateway_for(ups, routes, teams=teams, gateway={"retries": 0}) as gw:
        for _ in range(2):
            failed = gw.chat("hi", route="down", body={"max_tokens": 450})
            assert failed.status_code == 502
        response = gw.chat("hi", route="up", body={"max_tokens": 300})
    assert response.status_code == 200, response.text


def test_over_budget_requests_are_downgraded_to_local_when_the_route_says_so(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    cloud, home = a, b
    ups = {"cloud": external(cloud, model="gpt-4o-mini"), "home": upstream(home)}
    route = {"targets": ["cloud", "home"], "over_budget": "downgrade"}
    teams = {"eng": {"requests_per_minute": 1}}
    with gateway_for(ups, {"r": route}, teams=teams) as gw:
        assert gw.chat("first").status_code == 200
        assert gw.chat("second").status_code == 200
        assert gw.chat("third").status_code == 200
        rows = gw.records()
    assert contents(cloud) == ["first"]
    assert contents(home) == ["second", "third"]
    assert [(r.target, r.location) for r in rows] == [
        ("cloud", "external"),
        ("home", "local"),
        ("home", "local"),
    ]
    assert "downgraded" in rows[1].rule


def test_usd_per_day_is_counted_from_exact_usage_and_prices(a: ScriptedOpenAIServer) -> None:
    # gpt-4o-mini: $0.15 per 1M input tokens, $0.60 per 1M output tokens
    a.default = Reply(chunks=["ok"], prompt_tokens=1_000_000, completion_tokens=10)
    ups = {"cloud": external(a, model="gpt-4o-mini")}
    teams = {"eng": {"usd_per_day": 0.2}}
    with gateway_for(ups, {"r": {"targets": ["cloud"], "on_pii": "allow"}}, teams=teams) as gw:
        assert gw.chat("1").status_code == 200  # spend 0.15: under
        assert gw.chat("2").status_code == 200  # admitted under 0.2, spend now 0.30
        refused = gw.chat("3")
        rows = gw.records()
    assert refused.status_code == 429
    error = error_of(refused)
    assert error["code"] == "budget_exceeded" and "per day" in error["message"]
    assert len(a.requests) == 2
    expected = (1_000_000 * 0.15 + 10 * 0.60) / 1e6
    assert rows[0].cost_usd == pytest.approx(expected)
    assert rows[0].prompt_tokens == 1_000_000


def test_a_restarted_gateway_remembers_todays_spend(a: ScriptedOpenAIServer) -> None:
    a.default = Reply(chunks=["ok"], prompt_tokens=2_000_000)
    write_config(
        {"cloud": external(a, model="gpt-4o-mini")},
        {"r": {"targets": ["cloud"], "on_pii": "allow"}},
        teams={"eng": {"usd_per_day": 0.2}},
    )
    with running() as gw:
        assert gw.chat("1").status_code == 200  # $0.30: over from now on
    with running() as gw:
        assert gw.chat("2").status_code == 429
    assert len(a.requests) == 1


# ---- API ---------------------------------------------------------------------------------


def test_a_missing_or_wrong_key_is_a_401(a: ScriptedOpenAIServer) -> None:
    with gateway_for({"A": upstream(a)}, {"r": {"targets": ["A"]}}) as gw:
        for key in (None, "sk-wrong", ALICE.upper()):
            for path, body in (
                (
                    "/chat/completions",
                    {"model": "r", "messages": [{"role": "user", "content": "x"}]},
                ),
                ("/embeddings", {"model": "r", "input": "x"}),
            ):
                response = gw.post(path, body, key=key)
                assert response.status_code == 401, (key, path)
                assert error_of(response)["code"] == "invalid_api_key"
        models = gw.http.get(gw.base_url + "/models")
        assert models.status_code == 401 and error_of(models)["code"] == "invalid_api_key"
        for header in (ALICE, f"Token {ALICE}", "Bearer"):  # the key, but not as a bearer
            response = gw.http.get(gw.base_url + "/models", headers={"Authorization": header})
            assert response.status_code == 401, header
        with pytest.raises(openai.AuthenticationError):
            gw.client("sk-wrong").models.list()
    assert a.requests == []


def test_models_lists_the_routes(a: ScriptedOpenAIServer) -> None:
    routes = {"chat": {"targets": ["A"]}, "fast": {"targets": ["A"]}}
    with gateway_for({"A": upstream(a, model="secret-internal-id")}, routes) as gw:
        models = gw.client().models.list()
    assert sorted(m.id for m in models) == ["chat", "fast"]
    assert all(m.object == "model" for m in models)


def test_unknown_route_is_a_404_model_not_found(a: ScriptedOpenAIServer) -> None:
    with gateway_for({"A": upstream(a)}, {"r": {"targets": ["A"]}}) as gw:
        response = gw.chat("hi", route="no-such-route")
        with pytest.raises(openai.NotFoundError):
            gw.client().chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert a.requests == []


def test_other_paths_and_methods_get_openai_shaped_errors(a: ScriptedOpenAIServer) -> None:
    with gateway_for({"A": upstream(a)}, {"r": {"targets": ["A"]}}) as gw:
        auth = {"Authorization": f"Bearer {ALICE}"}
        wrong_method = gw.http.get(gw.base_url + "/chat/completions", headers=auth)
        no_path = gw.http.post(gw.base_url + "/completions", json={}, headers=auth)
        schema = gw.http.get(gw.url + "/openapi.json")
    assert wrong_method.status_code == 405 and error_of(wrong_method)
    assert no_path.status_code == 404 and error_of(no_path)
    assert schema.status_code == 200 and "/v1/chat/completions" in schema.json()["paths"]


def test_embeddings_on_an_upstream_without_them_is_a_clean_error(
    a: ScriptedOpenAIServer,
) -> None:
    # The scripted server only answers chat completions: 404 on /embeddings.
    with gateway_for({"A": upstream(a)}, {"r": {"targets": ["A"]}}) as gw:
        response = gw.post("/embeddings", {"model": "r", "input": "hello"})
        row = gw.last()
    assert response.status_code == 502
    error = error_of(response)
    assert error["code"] == "upstream_unavailable"
    assert "A: 404" in error["message"]
    assert len(a.requests) == 1  # a 404 is not retried
    assert (row.status, row.attempts) == (502, 1)


@pytest.fixture
def embedders() -> Iterator[tuple[EmbeddingServer, EmbeddingServer]]:
    with EmbeddingServer() as cloud, EmbeddingServer() as home:
        yield cloud, home


def test_embeddings_are_routed_and_forwarded(
    embedders: tuple[EmbeddingServer, EmbeddingServer],
) -> None:
    cloud, home = embedders
    ups = {
        "cloud": external(cloud, model="text-embedding-3-small"),
        "home": upstream(home, model="nomic-embed"),
    }
    route = {"targets": ["cloud", "home"], "on_pii": "pseudonymise"}
    with gateway_for(ups, {"emb": route}) as gw:
        client = gw.client()
        plain = client.embeddings.create(
            model="emb", input=["the quick brown fox", "jumps"], extra_body={"dimensions": 4}
        )
        private = client.embeddings.create(model="emb", input=f"mail {EMAIL}")
        rows = gw.records()
    assert [d.embedding[0] for d in plain.data] == [1.0, 2.0]
    assert plain.usage.prompt_tokens == 5
    assert cloud.requests[0]["input"] == ["the quick brown fox", "jumps"]
    assert cloud.requests[0]["model"] == "text-embedding-3-small"
    assert cloud.requests[0]["dimensions"] == 4
    # private data in an embedding input stays local (a placeholder would be embedded)
    assert len(private.data) == 1
    assert len(cloud.requests) == 1
    assert home.requests[0]["model"] == "nomic-embed" and home.requests[0]["input"] == (
        f"mail {EMAIL}"
    )
    assert [(r.target, r.location, r.prompt_tokens) for r in rows] == [
        ("cloud", "external", 5),
        ("home", "local", 2),
    ]
    assert rows[1].privacy_action == "route_local"


def test_malformed_requests_are_400s(a: ScriptedOpenAIServer) -> None:
    with gateway_for({"A": upstream(a)}, {"r": {"targets": ["A"]}}) as gw:
        auth = {"Authorization": f"Bearer {ALICE}", "Content-Type": "application/json"}
        url = gw.base_url + "/chat/completions"
        bad = [
            gw.http.post(url, content=b"{not json", headers=auth),
            gw.http.post(url, content=b"[1, 2]", headers=auth),
            gw.post("/chat/completions", {"model": "r"}),
            gw.post("/chat/completions", {"model": "r", "messages": []}),
            gw.post("/chat/completions", {"model": "r", "messages": [{"role": "wizard"}]}),
            gw.post("/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
            gw.post("/embeddings", {"model": "r"}),
            gw.chat("x", headers={"x-duet-time-budget-ms": "soon"}),
            gw.chat("x", headers={"x-duet-time-budget-ms": "0"}),
        ]
    for response in bad:
        assert response.status_code == 400, response.text
        assert error_of(response)["type"] == "invalid_request_error"
    assert a.requests == []


@pytest.mark.parametrize("value", ["\u00b2", "9" * 5000])
def test_an_odd_time_budget_header_is_a_400_not_a_500(value: str, a: ScriptedOpenAIServer) -> None:
    """'²' is a digit to str.isdigit() (and a valid latin-1 header byte) but not to int();
    5000 digits exceed Python's int-from-string limit. Both must be client errors."""
    with gateway_for({"A": upstream(a)}, {"r": {"targets": ["A"]}}) as gw:
        response = gw.chat("x", headers={"x-duet-time-budget-ms": value.encode("latin-1")})
    assert response.status_code == 400, response.text
    assert error_of(response)["param"] == "x-duet-time-budget-ms"


@pytest.mark.parametrize(
    "message",
    [
        {"role": "assistant", "content": "x", "tool_calls": 5},
        {"role": "assistant", "content": "x", "tool_calls": [{"function": "not an object"}]},
        {"role": "assistant", "content": "x", "tool_calls": [{"function": {"arguments": 3}}]},
    ],
)
def test_odd_tool_calls_are_not_a_server_error(
    message: dict[str, Any], a: ScriptedOpenAIServer
) -> None:
    """Fields the gateway does not validate are forwarded; reading them for PII must not
    crash on an unexpected shape."""
    with gateway_for({"A": upstream(a)}, {"r": {"targets": ["A"]}}) as gw:
        response = gw.post(
            "/chat/completions",
            {"model": "r", "messages": [message, {"role": "user", "content": "go on"}]},
        )
    assert response.status_code < 500, response.text


def test_a_body_over_max_body_bytes_is_a_413(a: ScriptedOpenAIServer) -> None:
    with gateway_for(
        {"A": upstream(a)}, {"r": {"targets": ["A"]}}, gateway={"max_body_bytes": 2048}
    ) as gw:
        big = gw.chat("x" * 4096)
        auth = {"Authorization": f"Bearer {ALICE}", "Content-Type": "application/json"}
        body = json.dumps({"model": "r", "messages": [{"role": "user", "content": "y" * 4096}]})
        chunked = gw.http.post(
            gw.base_url + "/chat/completions",
            content=iter([body[:1000].encode(), body[1000:].encode()]),
            headers=auth,
        )
        small = gw.chat("x" * 100)
    assert big.status_code == 413 and error_of(big)["code"] == "request_too_large"
    assert chunked.status_code == 413
    assert small.status_code == 200
    assert len(a.requests) == 1


def test_metrics_expose_requests_and_overhead(a: ScriptedOpenAIServer) -> None:
    with gateway_for({"A": upstream(a)}, {"r": {"targets": ["A"]}}) as gw:
        gw.chat("hi")
        gw.chat("hi", route="nope")
        text = gw.http.get(gw.url + "/metrics").text
    assert re.search(
        r'duet_gateway_requests_total\{location="local",route="r",status="200",target="A"\} 1\.0',
        text,
    ), text
    assert 'route="other"' in text and 'status="404"' in text
    count = re.search(r"^duet_gateway_overhead_seconds_count (\S+)$", text, re.M)
    assert count and float(count.group(1)) >= 1
    assert "duet_gateway_overhead_seconds_bucket" in text


# ---- config errors -----------------------------------------------------------------------


def build(upstreams: dict[str, Any], routes: dict[str, Any], **options: Any) -> Gateway:
    write_config(upstreams, routes, **options)
    return Gateway(load_settings("duet.toml"))


LOCAL = "http://127.0.0.1:9/v1"
REMOTE = "https://api.example.com/v1"


@pytest.mark.parametrize(
    ("upstreams", "routes", "options", "message"),
    [
        pytest.param(
            {"A": upstream(LOCAL)},
            {"r": {"targets": ["A", "missing"]}},
            {},
            r"missing",
            id="unknown-target",
        ),
        pytest.param(
            {"A": upstream(LOCAL)},
            {"r": {"targets": ["A"], "rules": [{"name": "x", "targets": ["ghost"]}]}},
            {},
            r"ghost",
            id="unknown-rule-target",
        ),
        pytest.param({"A": upstream(LOCAL)}, {}, {}, r"no gateway routes", id="no-routes"),
        pytest.param(
            {"A": upstream(REMOTE)},
            {"r": {"targets": ["A"]}},  # on_pii defaults to route_local
            {},
            r"route_local.*local upstream",
            id="route-local-without-local",
        ),
        pytest.param(
            {"A": upstream(REMOTE)},
            {"r": {"targets": ["A"], "on_pii": "allow", "over_budget": "downgrade"}},
            {},
            r"downgrade.*local upstream",
            id="downgrade-without-local",
        ),
        pytest.param(
            {"A": upstream(LOCAL)},
            {"r": {"targets": ["A", "llama"]}},
            {},
            r"llama.*runs in process",
            id="llamacpp-target",
        ),
        pytest.param(
            {"A": upstream(LOCAL)},
            {"r": {"targets": ["A"], "rules": [{"name": "x", "pii_types": ["SHOE_SIZE"]}]}},
            {},
            r"SHOE_SIZE",
            id="unknown-pii-type",
        ),
        pytest.param(
            {"A": upstream(LOCAL)},
            {"r": {"targets": ["A"]}},
            {"keys": {"carol": {"key_sha256": "0" * 64, "team": "nobody"}}},
            r"unknown team 'nobody'",
            id="unknown-team",
        ),
        pytest.param(
            {"A": upstream("ftp://example.com")},
            {"r": {"targets": ["A"]}},
            {},
            r"not an http\(s\) URL",
            id="bad-url",
        ),
    ],
)
def test_config_errors_name_the_problem(
    upstreams: dict[str, Any], routes: dict[str, Any], options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build(upstreams, routes, **options)


def test_no_keys_is_a_config_error() -> None:
    Path("duet.toml").write_text(
        '[gateway]\naudit_url = "audit.db"\n'
        f'[gateway.upstreams.A]\nbase_urls = ["{LOCAL}"]\nmodel = "m"\n'
        '[gateway.routes.r]\ntargets = ["A"]\n'
    )
    with pytest.raises(ConfigError, match=r"requires API keys"):
        Gateway(load_settings("duet.toml"))


def test_an_unset_key_env_is_a_config_error() -> None:
    write_config(
        {"A": upstream(LOCAL)},
        {"r": {"targets": ["A"]}},
        keys={"carol": {"key_env": "CAROL_GATEWAY_KEY"}},
    )
    with pytest.raises(ConfigError, match=r"carol.*CAROL_GATEWAY_KEY is not set"):
        gateway = Gateway(load_settings("duet.toml"))
        asyncio.run(gateway.start())  # the secrets are read at start-up at the latest


def test_a_key_from_the_environment_works(
    a: ScriptedOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAROL_GATEWAY_KEY", "sk-carol")
    keys = {"carol": {"key_env": "CAROL_GATEWAY_KEY"}}
    with gateway_for({"A": upstream(a)}, {"r": {"targets": ["A"]}}, keys=keys) as gw:
        assert gw.chat("hi", key="sk-carol").status_code == 200
        assert gw.last().key == "carol"


# ---- the audit never holds PII -----------------------------------------------------------


def audit_bytes() -> bytes:
    return b"".join(
        Path(name).read_bytes() for name in ("audit.db", "audit.db-wal") if Path(name).exists()
    )


def encodings(value: str) -> list[bytes]:
    return [value.encode(), json.dumps(value).encode()[1:-1], value.replace(" ", "").encode()]


def exercise_privacy(gw: Running) -> None:
    gw.chat(PII_PROMPT, route="local")
    gw.chat(PII_PROMPT, route="mask")
    gw.stream_events(PII_PROMPT, route="mask")
    gw.chat(PII_PROMPT, route="block")
    gw.chat(PII_PROMPT, route="allow")
    gw.chat(PII_PROMPT, route="allow", headers={"x-duet-time-budget-ms": "never"})


def privacy_routes() -> dict[str, Any]:
    return {
        name: {"targets": ["cloud", "home"], "on_pii": action}
        for name, action in (
            ("local", "route_local"),
            ("mask", "pseudonymise"),
            ("block", "block"),
            ("allow", "allow"),
        )
    }


def test_the_audit_never_holds_a_pii_value(
    a: ScriptedOpenAIServer, b: ScriptedOpenAIServer
) -> None:
    a.default = Reply.text("Sure <EMAIL_1>, card <CREDIT_CARD_1>, phone <PHONE_1>.")
    ups = {"cloud": external(a, model="gpt-4o-mini"), "home": upstream(b)}
    with gateway_for(ups, privacy_routes()) as gw:
        exercise_privacy(gw)
        rows = gw.records()
        during = audit_bytes()
    after = audit_bytes()
    assert len(rows) == 6
    assert {r.status for r in rows} == {200, 400}
    assert all("EMAIL" in r.pii_types for r in rows[:5])  # the last one was refused first
    for value in (EMAIL, CARD, PHONE, ALICE):
        for form in encodings(value):
            assert form not in during and form not in after, value


def test_the_audit_does_not_keep_an_unknown_route_name_verbatim(a: ScriptedOpenAIServer) -> None:
    """The client chooses `model`; an unknown one (a typo, or a value pasted by mistake)
    is recorded as the audit row's route. The audit promises never to hold PII values."""
    with gateway_for({"A": upstream(a)}, {"r": {"targets": ["A"]}}) as gw:
        assert gw.chat("hi", route=EMAIL).status_code == 404
        gw.records()
        stored = audit_bytes()
    assert EMAIL.encode() not in stored, "the audit stored the client's model string"
