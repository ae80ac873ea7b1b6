"""The privacy guarantee tested at the wire.

A raw TCP forwarder sits between the gateway and its external upstream and records every
byte the gateway sends out. Every snippet of the shipped labeled set that has PII goes
through the gateway, non-streamed and streamed; the upstream echoes the placeholders it
was sent, so the client side checks restoration too.

What is asserted, honestly:

* Structured types (e-mail, phone, card, IBAN, IP, API key, SSN, NINO) must never appear
  on the wire: the detector's recall on them is 1.0 on this set (BENCHMARKS.md), so any
  leak is a gateway bug.
* Person names are found from cues only, and the detector misses some (recall about 0.6
  in BENCHMARKS.md). A name the detector does not find cannot be masked, so it does
  reach the external model. The test computes those misses offline with
  ``llmduet.gateway.pii.detect`` and asserts that the names seen on the wire are exactly
  those: not one more (the gateway loses nothing the detector found), and the count is
  reported in the assertion message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway_helpers import (
    Running,
    Scripted,
    TcpRecorder,
    content_of,
    running,
    upstream,
    write_config,
)
from jsonl import read_jsonl
from llmduet.data import PII_SNIPPETS
from llmduet.gateway.pii import detect
from llmduet.gateway.pseudonymise import Pseudonymiser
from llmduet.testing import Reply

SNIPPETS: list[dict[str, Any]] = read_jsonl(PII_SNIPPETS)
WITH_PII = [s for s in SNIPPETS if s["entities"]]


@dataclass
class Wire:
    gateway: Running
    cloud: Scripted
    home: Scripted
    recorder: TcpRecorder

    def sent_during(self, call: Any) -> tuple[Any, bytes]:
        """Run ``call()`` and return its result and the bytes the gateway sent out meanwhile
        (requests are sequential, so these are the bytes of this request)."""
        before = self.recorder.sent_count()
        result = call()
        return result, self.recorder.sent()[before:]


@pytest.fixture(scope="module")
def wire(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wire]:
    folder: Path = tmp_path_factory.mktemp("wire")
    with Scripted() as cloud, Scripted() as home, TcpRecorder(cloud.port) as recorder:
        ups = {
            # the forwarder is on 127.0.0.1 too: say that what is behind it is external
            "cloud": upstream(recorder.base_url, model="gpt-4o-mini", location="external"),
            "home": upstream(home, model="llama"),
        }
        routes = {
            "mask": {"targets": ["cloud", "home"], "on_pii": "pseudonymise"},
            "local": {"targets": ["cloud", "home"], "on_pii": "route_local"},
        }
        path = write_config(
            ups,
            routes,
            gateway={"audit_url": str(folder / "audit.db")},
            path=str(folder / "duet.toml"),
        )
        with running(str(path)) as gateway:
            yield Wire(gateway, cloud, home, recorder)


def forms(value: str) -> list[bytes]:
    """How a value can look on the wire: as is (UTF-8) and JSON-escaped as json.dumps
    writes it (ASCII with \\u escapes, quotes and backslashes escaped)."""
    return list(
        dict.fromkeys(
            [
                value.encode(),
                json.dumps(value)[1:-1].encode(),
                json.dumps(value, ensure_ascii=False)[1:-1].encode(),
            ]
        )
    )


def on_wire(value: str, sent: bytes) -> bool:
    return any(form in sent for form in forms(value))


def missed_offline(snippet: dict[str, Any]) -> list[dict[str, Any]]:
    """The labeled spans no finding of the detector covers (they cannot be masked)."""
    found = detect(snippet["text"])
    return [
        e
        for e in snippet["entities"]
        if not any(f.start <= e["start"] and e["end"] <= f.end for f in found)
    ]


def chunked(text: str, size: int = 3) -> list[str]:
    """Small chunks, so placeholders arrive split across stream events."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def test_pseudonymised_requests_never_put_detected_pii_on_the_wire(wire: Wire) -> None:
    client = wire.gateway.client()
    leaked: set[tuple[str, str, str]] = set()  # (snippet, type, value)
    wrong_replies: list[str] = []
    requests = 0
    for snippet in WITH_PII:
        text = snippet["text"]
        echo = Pseudonymiser().mask(text)  # what the gateway should send, echoed back
        messages = [{"role": "user", "content": text}]
        wire.cloud.queue(Reply(chunks=[echo]))
        reply, sent = wire.sent_during(
            lambda m=messages: client.chat.completions.create(model="mask", messages=m)
        )
        wire.cloud.queue(Reply(chunks=chunked(echo)))
        streamed, sent_streamed = wire.sent_during(
            lambda m=messages: wire.gateway.stream_events(m[0]["content"], route="mask")
        )
        requests += 2
        assert sent and sent_streamed, "the request did not go through the forwarder"
        if reply.choices[0].message.content != text:
            wrong_replies.append(f"{snippet['id']}: {reply.choices[0].message.content!r}")
        if content_of(streamed) != text:
            wrong_replies.append(f"{snippet['id']} (stream): {content_of(streamed)!r}")
        for entity in snippet["entities"]:
            for out in (sent, sent_streamed):
                if on_wire(entity["value"], out):
                    leaked.add((snippet["id"], entity["type"], entity["value"]))

    structured = sorted(leak for leak in leaked if leak[1] != "PERSON")
    assert not structured, f"structured PII reached the external upstream: {structured[:5]}"
    everything = wire.recorder.sent()  # the requests did go out, masked
    assert everything.count(b"POST /v1/chat/completions") >= requests
    assert b"<EMAIL_1>" in everything and b"<CREDIT_CARD_1>" in everything
    expected_person = {
        (s["id"], e["type"], e["value"])
        for s in WITH_PII
        for e in missed_offline(s)
        if e["type"] == "PERSON"
    }
    persons = sum(e["type"] == "PERSON" for s in WITH_PII for e in s["entities"])
    person_leaks = {leak for leak in leaked if leak[1] == "PERSON"}
    assert person_leaks == expected_person, (
        f"{len(person_leaks)} of {persons} person names reached the wire; the detector "
        f"misses {len(expected_person)} offline. Only on the wire: "
        f"{sorted(person_leaks - expected_person)[:5]}; masked although missed offline: "
        f"{sorted(expected_person - person_leaks)[:5]}"
    )
    assert not any(e["type"] != "PERSON" for s in WITH_PII for e in missed_offline(s))
    assert not wrong_replies, f"{len(wrong_replies)} replies not restored: {wrong_replies[:3]}"


def test_route_local_sends_nothing_out_for_requests_with_pii(wire: Wire) -> None:
    client = wire.gateway.client()
    went_out: list[str] = []
    home_before = len(wire.home.requests)
    for snippet in WITH_PII:
        text = snippet["text"]
        messages = [{"role": "user", "content": text}]
        _, sent = wire.sent_during(
            lambda m=messages: client.chat.completions.create(model="local", messages=m)
        )
        _, sent_streamed = wire.sent_during(
            lambda t=text: wire.gateway.stream_events(t, route="local")
        )
        if sent or sent_streamed:
            went_out.append(snippet["id"])
    # A snippet leaves only if the detector finds nothing in it (a missed name alone).
    undetected = [s["id"] for s in WITH_PII if not detect(s["text"])]
    assert went_out == undetected, f"{len(went_out)} snippets with PII left: {went_out[:5]}"
    assert len(wire.home.requests) - home_before == 2 * (len(WITH_PII) - len(undetected))
    # the forwarder is on the path: a request without PII does go out through it
    _, sent = wire.sent_during(lambda: wire.gateway.chat("What is 2 + 2?", route="local"))
    assert b"What is 2 + 2?" in sent


CARD = "4111 1111 1111 1111"
EMAIL = "grace.hopper@example.com"
IBAN = "GB82 WEST 1234 5698 7654 32"


def test_pii_in_parts_tool_calls_and_tool_results_is_masked_on_the_wire(wire: Wire) -> None:
    messages = [
        {"role": "system", "content": [{"type": "text", "text": f"Escalate to {EMAIL}."}]},
        {"role": "user", "content": [{"type": "text", "text": f"Refund card {CARD}"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "refund",
                        "arguments": json.dumps({"card": CARD, "iban": IBAN}),
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": f"refunded to {IBAN}"},
    ]
    wire.cloud.queue(Reply(chunks=["Refunded <CREDIT_CARD_1> via <IBAN_1>."]))
    response, sent = wire.sent_during(
        lambda: wire.gateway.post("/chat/completions", {"model": "mask", "messages": messages})
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == f"Refunded {CARD} via {IBAN}."
    assert sent
    for value in (CARD, EMAIL, IBAN):
        assert not on_wire(value, sent), value


def test_a_detected_value_is_masked_wherever_it_appears(wire: Wire) -> None:
    """The pseudonymiser promises "the same value gets the same placeholder everywhere in
    the conversation". A name found once (here after "Dr.") must then be masked in the
    other messages too, where no cue would find it on its own."""
    name = "Okonkwo Adebayo"
    assert [f.value for f in detect(f"Ask Dr. {name} first")] == [name]
    assert detect(f"{name} called back at noon") == []
    messages = [
        {"role": "user", "content": f"Ask Dr. {name} first."},
        {"role": "assistant", "content": "Will do."},
        {"role": "user", "content": f"{name} called back at noon."},
    ]
    response, sent = wire.sent_during(
        lambda: wire.gateway.post("/chat/completions", {"model": "mask", "messages": messages})
    )
    assert response.status_code == 200, response.text
    assert sent and b"<PERSON_1>" in sent
    assert not on_wire(name, sent), "a value the gateway had detected went out unmasked"


def test_the_user_field_and_sender_names_are_masked_too(wire: Wire) -> None:
    """``user`` is often an email and ``name`` a person: both reach the provider, so both
    are inspected and masked like message text."""
    body = {
        "model": "mask",
        "user": EMAIL,
        "messages": [{"role": "user", "name": "Dr. Ada Lovelace", "content": "Summarise."}],
    }
    response, sent = wire.sent_during(lambda: wire.gateway.post("/chat/completions", body))
    assert response.status_code == 200, response.text
    assert sent and b"<EMAIL_1>" in sent
    assert not on_wire(EMAIL, sent)
    assert not on_wire("Ada Lovelace", sent)


def test_private_data_anywhere_in_the_body_is_seen_and_masked(wire: Wire) -> None:
    """Not only messages: ``prediction``, ``metadata`` and tool descriptions reach the
    provider too, so they are inspected (route_local keeps them home) and masked."""
    body = {
        "messages": [{"role": "user", "content": "Tidy this up."}],
        "prediction": {"type": "content", "content": f"Write to {EMAIL} today."},
        "metadata": {"owner": EMAIL},
        "tools": [{"type": "function", "function": {"name": "refund",
                   "description": f"Refunds card {CARD}", "parameters": {}}}],
    }  # fmt: skip
    response, sent = wire.sent_during(
        lambda: wire.gateway.post("/chat/completions", {**body, "model": "mask"})
    )
    assert response.status_code == 200, response.text
    assert sent and b"<EMAIL_1>" in sent and b"<CREDIT_CARD_1>" in sent
    assert not on_wire(EMAIL, sent) and not on_wire(CARD, sent)
    response, sent = wire.sent_during(
        lambda: wire.gateway.post("/chat/completions", {**body, "model": "local"})
    )
    assert response.status_code == 200 and sent == b""
    assert response.headers["x-duet-location"] == "local"
