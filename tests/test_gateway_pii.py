"""The privacy guard: recognisers with their validators, and pseudonymisation that
restores the originals, streaming included."""

from __future__ import annotations

import pytest

from jsonl import read_jsonl
from llmduet.gateway.pii import detect, iban_valid, luhn_valid
from llmduet.gateway.pseudonymise import Pseudonymiser


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mail jane.doe@example.com today", [("EMAIL", "jane.doe@example.com")]),
        (
            "Call +1-212-555-0142 or (212) 555-0199",
            [("PHONE", "+1-212-555-0142"), ("PHONE", "(212) 555-0199")],
        ),
        ("Office +44 20 7946 0958", [("PHONE", "+44 20 7946 0958")]),
        ("Card 4111 1111 1111 1111 please", [("CREDIT_CARD", "4111 1111 1111 1111")]),
        ("Pay to GB82 WEST 1234 5698 7654 32", [("IBAN", "GB82 WEST 1234 5698 7654 32")]),
        (
            "hosts 192.0.2.44 and 2001:db8::1",
            [("IP_ADDRESS", "192.0.2.44"), ("IP_ADDRESS", "2001:db8::1")],
        ),
        (
            "use sk-proj-Abc123Def456Ghi789Jkl0MnoPq",
            [("API_KEY", "sk-proj-Abc123Def456Ghi789Jkl0MnoPq")],
        ),
        ("aws AKIAIOSFODNN7EXAMPLE key", [("API_KEY", "AKIAIOSFODNN7EXAMPLE")]),
        ("api_key = 'Zx9Qw8Er7Ty6Ui5Op4As'", [("API_KEY", "Zx9Qw8Er7Ty6Ui5Op4As")]),
        ("SSN 123-45-6789", [("US_SSN", "123-45-6789")]),
        ("NI number AB 12 34 56 C", [("UK_NINO", "AB 12 34 56 C")]),
        ("Dear Maria Gonzalez, see you", [("PERSON", "Maria Gonzalez")]),
        ("Ask Dr. Okonkwo Adebayo first", [("PERSON", "Okonkwo Adebayo")]),
    ],
)
def test_each_type_is_found(text: str, expected: list[tuple[str, str]]) -> None:
    assert [(f.type, f.value) for f in detect(text)] == expected
    for finding in detect(text):
        assert text[finding.start : finding.end] == finding.value


@pytest.mark.parametrize(
    "text",
    [
        "Card 4111 1111 1111 1112 fails Luhn",
        "IBAN GB82 WEST 1234 5698 7654 33 has a bad checksum",
        "Python 3.11.7 on build 2024.10.14, order 48213, total 1,299.00",
        "SSN 000-12-3456 and 666-12-3456 are never issued",
        "version 999.1.2.3 is not an address, nor is 256.1.1.1",
        "Northwind Labs ships Insight 4.2 on 14 October 2024",
        "Ticket 555-0199 is a short internal extension",
    ],
)
def test_hard_negatives_are_not_flagged(text: str) -> None:
    assert detect(text) == []


def test_validators() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert luhn_valid("5555 5555 5555 4444") and not luhn_valid("1234")
    assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid(
        "DE89 3704 0044 0532 0130 01"
    )


def test_pseudonymise_masks_stably_and_restores() -> None:
    guard = Pseudonymiser()
    masked = guard.mask_messages(
        [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": "Email jane@example.com and bob@example.org, then jane@example.com.",
            },
        ]
    )
    assert masked[1]["content"] == "Email <EMAIL_1> and <EMAIL_2>, then <EMAIL_1>."
    assert masked[0]["content"] == "Be brief."
    reply = "I wrote to <EMAIL_2> and cc'd <EMAIL_1>; <EMAIL_9> is unknown."
    assert (
        guard.restore(reply)
        == "I wrote to bob@example.org and cc'd jane@example.com; <EMAIL_9> is unknown."
    )
    assert {f.type for f in guard.findings} == {"EMAIL"}


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_streamed_replies_are_restored_even_when_a_placeholder_is_split(size: int) -> None:
    guard = Pseudonymiser()
    guard.mask("Card 4111 1111 1111 1111 belongs to Dear Maria Gonzalez")
    reply = "Charged <CREDIT_CARD_1> for <PERSON_1>. Compare x < y and <b>bold</b> <PERSON"
    chunks = [reply[i : i + size] for i in range(0, len(reply), size)]
    restorer = guard.stream_restorer()
    shown = [restorer.feed(chunk) for chunk in chunks] + [restorer.flush()]
    assert "".join(shown) == (
        "Charged 4111 1111 1111 1111 for Maria Gonzalez. Compare x < y and <b>bold</b> <PERSON"
    )
    assert not any("<CREDIT" in part or "<PERSON_" in part for part in shown)


def test_the_shipped_labeled_set_and_detection_quality_on_it() -> None:

    from llmduet.data import PII_SNIPPETS

    snippets = read_jsonl(PII_SNIPPETS)
    assert len(snippets) >= 300 and sum(bool(s["entities"]) for s in snippets) * 2 == len(snippets)
    found = missed = extra = 0
    for snippet in snippets:
        text = snippet["text"]
        labels = {(e["type"], e["start"], e["end"]) for e in snippet["entities"]}
        for entity in snippet["entities"]:
            assert text[entity["start"] : entity["end"]] == entity["value"], snippet["id"]
        detected = {(f.type, f.start, f.end) for f in detect(text) if f.type != "PERSON"}
        structured = {label for label in labels if label[0] != "PERSON"}
        found += len(structured & detected)
        missed += len(structured - detected)
        extra += len(detected - structured)
    assert found / (found + missed) >= 0.98  # recall on structured types
    assert found / (found + extra) >= 0.95  # precision on structured types
