from __future__ import annotations

import json
from typing import Any

import pytest

from llmduet.evals.metrics.deterministic import (
    DETERMINISTIC,
    contains,
    exact_match,
    json_valid,
    normalize_answer,
    regex_match,
    schema_errors,
    token_f1,
)

# --- SQuAD metrics ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Denver Broncos!", "denver broncos"),
        ("  An   apple's\tcore ", "apples core"),
        ("a theory of the case", "theory of case"),
        ("Theatre, then anthem.", "theatre then anthem"),  # articles only as whole words
        ("Saint-Étienne", "saintétienne"),  # punctuation is deleted, not replaced by space
        ("", ""),
    ],
)
def test_normalize_answer_matches_squad(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_exact_match_after_normalisation_and_over_a_list() -> None:
    assert exact_match("the Denver Broncos.", "Denver Broncos") == 1.0
    assert exact_match("Broncos", "Denver Broncos") == 0.0
    assert exact_match("Broncos", ["Denver Broncos", "Broncos"]) == 1.0
    assert exact_match("Panthers", ["Denver Broncos", "Broncos"]) == 0.0


def test_token_f1_known_squad_values() -> None:
    # SQuAD v1.1 dev, Super Bowl 50: gold "Denver Broncos".
    assert token_f1("Denver Broncos", "Denver Broncos") == 1.0
    assert token_f1("Broncos", "Denver Broncos") == pytest.approx(2 / 3)  # P=1, R=1/2
    assert token_f1("the Denver Broncos team", "Denver Broncos") == pytest.approx(0.8)
    assert token_f1("Carolina Panthers", "Denver Broncos") == 0.0
    # Repeated tokens are counted with multiplicity: common = {a:1} -> P=1/3, R=1.
    assert token_f1("x x y", "x") == pytest.approx(0.5)
    assert token_f1("Broncos", ["Carolina Panthers", "Denver Broncos"]) == pytest.approx(2 / 3)


def test_token_f1_empty_answers() -> None:
    assert token_f1("", "") == 1.0
    assert token_f1("the", "a") == 1.0  # both normalise to empty
    assert token_f1("", "Denver") == 0.0
    assert token_f1("Denver", "") == 0.0


def test_an_empty_reference_list_is_an_error() -> None:
    with pytest.raises(ValueError, match="reference"):
        exact_match("x", [])
    with pytest.raises(ValueError, match="reference"):
        token_f1("x", [])


# --- contains / regex ------------------------------------------------------------------


def test_contains() -> None:
    assert contains("Paris is the capital of France", "paris") == 1.0
    assert contains("Paris is the capital of France", "paris", case_sensitive=True) == 0.0
    assert contains("Paris is the capital of France", ["Paris", "France"]) == 1.0
    assert contains("Paris is the capital of France", ["Paris", "Spain"]) == 0.0
    with pytest.raises(ValueError):
        contains("x", [])


def test_regex_match() -> None:
    assert regex_match("Order #1234 shipped", r"#\d{4}\b") == 1.0
    assert regex_match("Order #12 shipped", r"#\d{4}\b") == 0.0
    assert regex_match("ANSWER: yes", r"answer:\s*yes") == 0.0
    assert regex_match("ANSWER: yes", r"(?i)answer:\s*yes") == 1.0


def test_regex_match_names_the_bad_pattern() -> None:
    with pytest.raises(ValueError, match=r"'\(unclosed'"):
        regex_match("x", "(unclosed")


# --- JSON ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', 1.0),
        ("[1, 2, 3]", 1.0),
        ("null", 1.0),
        ('```json\n{"a": 1}\n```', 1.0),
        ('  ```JSON\n{"a": 1}\n```  \n', 1.0),
        ('```\n{"a": 1}\n```', 1.0),
        ('Here you go: {"a": 1}', 0.0),
        ("{'a': 1}", 0.0),
        ('{"a": 1,}', 0.0),
        ("NaN", 0.0),
        ('{"a": Infinity}', 0.0),
        ('```json\n{"a": 1}\n```\n```json\n{"b": 2}\n```', 0.0),  # two blocks: not one fence
        ("", 0.0),
    ],
)
def test_json_valid_without_schema(text: str, expected: float) -> None:
    assert json_valid(text) == expected


def test_json_valid_deeply_nested_input_fails_rather_than_crashing() -> None:
    assert json_valid("[" * 100_000 + "]" * 100_000) == 0.0


PERSON: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 10},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
        "role": {"enum": ["admin", "user"]},
        "version": {"const": 2},
        "score": {"type": ["number", "null"]},
        "id": {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 1}]},
        "pick": {"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 10}]},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
VALID_PERSON: dict[str, Any] = {
    "name": "Ada",
    "age": 36,
    "tags": ["math"],
    "role": "admin",
    "version": 2,
    "score": None,
    "id": "x1",
    "pick": 12.5,
}


_DELETE = object()


def _with(**changes: Any) -> str:
    doc = dict(VALID_PERSON)
    for key, value in changes.items():
        if value is _DELETE:
            del doc[key]
        else:
            doc[key] = value
    return json.dumps(doc)


def test_schema_accepts_a_conforming_document() -> None:
    assert json_valid(json.dumps(VALID_PERSON), PERSON) == 1.0
    assert json_valid(_with(score=3.5, id=7, pick=3), PERSON) == 1.0
    assert json_valid(_with(age=36.0), PERSON) == 1.0  # 36.0 is an integer in JSON Schema
    assert json_valid(f"```json\n{json.dumps(VALID_PERSON)}\n```", PERSON) == 1.0


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (json.dumps([VALID_PERSON]), "expected object"),  # type
        ("{}", "missing required property 'name'"),  # required
        (_with(age=_DELETE), "missing required property 'age'"),  # required
        (_with(extra=1), "unexpected property 'extra'"),  # additionalProperties: false
        (_with(name=3), "$.name: expected string"),  # properties -> type
        (_with(age=36.5), "$.age: expected integer"),  # integer vs number
        (_with(age=True), "$.age: expected integer"),  # a boolean is not an integer
        (_with(age="36"), "$.age: expected integer"),
        (_with(score=False), "$.score: expected number or null"),  # type list; bool not number
        (_with(score="1"), "$.score: expected number or null"),
        (_with(tags=["a", 1]), "$.tags[1]: expected string"),  # items
        (_with(tags=[]), "fewer than 1 items"),  # minItems
        (_with(tags=["a", "b", "c", "d"]), "more than 3 items"),  # maxItems
        (_with(name=""), "shorter than 1"),  # minLength
        (_with(name="A" * 11), "longer than 10"),  # maxLength
        (_with(age=-1), "less than the minimum"),  # minimum
        (_with(age=151), "greater than the maximum"),  # maximum
        (_with(role="root"), "must be one of"),  # enum
        (_with(version=3), "must equal 2"),  # const
        (_with(id=0), "none of the anyOf"),  # anyOf: neither branch
        (_with(id=None), "none of the anyOf"),
        (_with(pick=12), "matches 2 of the oneOf"),  # oneOf: both branches
        (_with(pick="5"), "matches 0 of the oneOf"),  # oneOf: no branch
    ],
)
def test_schema_rejects_each_supported_violation(doc: str, reason: str) -> None:
    assert json_valid(doc, PERSON) == 0.0
    errors = schema_errors(json.loads(doc), PERSON)
    assert any(reason in e for e in errors), errors


def test_enum_and_const_use_json_equality() -> None:
    assert json_valid("true", {"enum": [1, 0]}) == 0.0
    assert json_valid("0", {"const": False}) == 0.0
    assert json_valid("1.0", {"const": 1}) == 1.0
    assert json_valid('{"a": [1, true]}', {"const": {"a": [1, True]}}) == 1.0
    assert json_valid('{"a": [1, 1]}', {"const": {"a": [1, True]}}) == 0.0


def test_additional_properties_schema_and_boolean_schemas() -> None:
    schema = {"type": "object", "additionalProperties": {"type": "integer"}}
    assert json_valid('{"a": 1, "b": 2}', schema) == 1.0
    assert json_valid('{"a": 1, "b": "2"}', schema) == 0.0
    assert json_valid('{"a": 1}', True) == 1.0
    assert json_valid('{"a": 1}', False) == 0.0
    assert json_valid("[1, 2]", {"type": "array", "items": False}) == 0.0
    assert json_valid("[]", {"type": "array", "items": False}) == 1.0


def test_keywords_only_apply_to_their_own_type() -> None:
    assert json_valid('"abc"', {"minimum": 10, "minItems": 5}) == 1.0
    assert json_valid("3", {"minLength": 5, "required": ["x"]}) == 1.0


def test_annotations_are_ignored() -> None:
    schema = {"$schema": "x", "title": "T", "description": "d", "format": "email"}
    assert json_valid('"not an email"', schema) == 1.0


@pytest.mark.parametrize(
    "schema",
    [
        {"pattern": "^a"},
        {"type": "object", "properties": {"a": {"$ref": "#/defs/x"}}},
        {"allOf": [{"type": "string"}]},
        {"type": "text"},
        {"type": ["string", {"x": 1}]},
        {"minLength": -1},
        {"maxItems": "3"},
        {"minimum": True},
        {"anyOf": []},
        {"required": "name"},
        {"enum": "a"},
        "not a schema",
    ],
)
def test_unsupported_or_malformed_schemas_raise(schema: Any) -> None:
    # Raised even when the prediction is not JSON, so a bad schema is never hidden.
    with pytest.raises(ValueError):
        json_valid("not json", schema)
    with pytest.raises(ValueError):
        json_valid('"a"', schema)


def test_registry_names() -> None:
    assert set(DETERMINISTIC) == {"exact_match", "token_f1", "contains", "regex", "json_valid"}
    assert DETERMINISTIC["regex"] is regex_match
    assert DETERMINISTIC["exact_match"]("The cat", "cat") == 1.0
