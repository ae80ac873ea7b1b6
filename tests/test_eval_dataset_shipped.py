"""The shipped chat evaluation set is well formed and its references hold up."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest

from jsonl import read_jsonl

CHAT = Path(__file__).parent.parent / "src/llmduet/data/evals/chat.jsonl"

TASKS = {"extraction", "classification", "summarisation", "arithmetic", "refusal"}
DIFFICULTIES = {"easy", "hard"}
ID_PREFIX = {
    "extract": "extraction",
    "classify": "classification",
    "summ": "summarisation",
    "arith": "arithmetic",
    "refuse": "refusal",
}
ALLOWED_METRICS = {
    "extraction": {"exact_match", "contains", "json_valid"},
    "classification": {"exact_match", "contains"},
    "arithmetic": {"exact_match", "regex"},
    "summarisation": {"token_f1", "semantic_similarity"},
    "refusal": {"judge"},
}
REQUIRED_METRICS = {
    "extraction": set(),
    "classification": set(),
    "arithmetic": {"exact_match", "regex"},
    "summarisation": {"token_f1", "semantic_similarity"},
    "refusal": {"judge"},
}
SCHEMA_KEYS = {"type", "properties", "required"}
JSON_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}

# Every arithmetic reference, recomputed from the numbers in its prompt.
ARITHMETIC = {
    "arith-001": round(17 * 23.50, 2),
    "arith-002": round(3 * 1249.00 + 5 * 219.90 + 8 * 45.25, 2),
    "arith-003": round(14 * (45 / 60) * 62, 2),
    "arith-004": round((392 - 320) / 320 * 100, 2),
    "arith-005": round(((24 * 60 - (18 * 60 + 30)) + (7 * 60 + 15)) / 60, 2),
    "arith-006": round((12 + 7 + 31 + 18 + 22) / 5, 2),
    "arith-007": round(14 * 39 * 12 * (1 - 0.15), 2),
    "arith-008": round(2.4 * 1000 * 0.023, 2),
    "arith-009": round(1200 - (349.99 + 215.50 + 89.00), 2),
    "arith-010": round((3 * 10 - 2) * 6.5, 2),
    "arith-011": round(4850 * 0.68, 2),
    "arith-012": round((40 * 4.5 + 25 * 3.8 + 35 * 4.2) / (40 + 25 + 35), 2),
}


def load_cases() -> list[dict]:
    return read_jsonl(CHAT)


def task_of(case: dict) -> str:
    (task,) = [tag for tag in case["tags"] if tag in TASKS]
    return task


def by_task(task: str) -> list[dict]:
    return [case for case in load_cases() if task_of(case) == task]


def metrics_named(case: dict, name: str) -> list[dict]:
    return [metric for metric in case["metrics"] if metric["name"] == name]


def conforms(value: object, schema: dict) -> bool:
    """A small validator for the type/properties/required subset of JSON Schema."""
    kind = schema["type"]
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
    }
    if not checks[kind](value):
        return False
    if kind == "object":
        assert isinstance(value, dict)
        if any(key not in value for key in schema.get("required", [])):
            return False
        for key, sub in schema.get("properties", {}).items():
            if key in value and not conforms(value[key], sub):
                return False
    return True


def check_schema(schema: object) -> None:
    assert isinstance(schema, dict) and "type" in schema, schema
    assert set(schema) <= SCHEMA_KEYS, set(schema) - SCHEMA_KEYS
    assert schema["type"] in JSON_TYPES, schema["type"]
    properties = schema.get("properties", {})
    assert isinstance(properties, dict)
    for sub in properties.values():
        check_schema(sub)
    required = schema.get("required", [])
    assert isinstance(required, list) and set(required) <= set(properties), required


def test_file_parses_into_sixty_cases_with_unique_ids() -> None:
    cases = load_cases()
    assert len(cases) == 60
    ids = [case["id"] for case in cases]
    assert len(set(ids)) == 60, [i for i, n in Counter(ids).items() if n > 1]


def test_every_case_has_the_fields_and_types() -> None:
    for case in load_cases():
        assert set(case) == {"id", "input", "reference", "tags", "metrics"}, case.get("id")
        cid = case["id"]
        assert isinstance(cid, str) and re.fullmatch(r"[a-z]+-\d{3}", cid), cid
        assert isinstance(case["input"], str) and case["input"].strip(), cid
        assert len(case["input"]) < 900, (cid, len(case["input"]))
        assert isinstance(case["reference"], str) and case["reference"].strip(), cid
        tags = case["tags"]
        assert isinstance(tags, list) and all(isinstance(tag, str) for tag in tags), cid
        assert len(set(tags)) == len(tags), cid
        assert len([tag for tag in tags if tag in TASKS]) == 1, cid
        assert set(tags) <= TASKS | DIFFICULTIES, cid
        assert not set(tags) >= DIFFICULTIES, cid
        task = task_of(case)
        assert ID_PREFIX[cid.split("-")[0]] == task, cid
        metrics = case["metrics"]
        assert isinstance(metrics, list) and metrics, cid
        names = []
        for metric in metrics:
            assert isinstance(metric, dict) and isinstance(metric.get("name"), str), cid
            names.append(metric["name"])
        assert set(names) <= ALLOWED_METRICS[task], (cid, names)
        assert REQUIRED_METRICS[task] <= set(names), (cid, names)
        assert len(set(names)) == len(names), (cid, names)


def test_each_tag_has_at_least_ten_cases() -> None:
    counts = Counter(task_of(case) for case in load_cases())
    assert set(counts) == TASKS
    assert all(count >= 10 for count in counts.values()), counts


def test_metric_parameters_are_well_formed() -> None:
    for case in load_cases():
        for metric in case["metrics"]:
            name = metric["name"]
            if name == "contains":
                needles = metric["needle"]
                assert isinstance(needles, list) and needles, case["id"]
                for needle in needles:
                    assert isinstance(needle, str) and needle.strip(), case["id"]
                    assert needle.casefold() in case["reference"].casefold(), (case["id"], needle)
            elif name == "regex":
                assert isinstance(metric["pattern"], str), case["id"]
            elif name == "json_valid":
                assert isinstance(metric["schema"], dict), case["id"]
            elif name == "judge":
                assert isinstance(metric["rubric"], str) and len(metric["rubric"]) >= 40, case["id"]
            else:
                assert set(metric) == {"name"}, case["id"]


def test_classification_prompts_list_their_labels() -> None:
    for case in by_task("classification"):
        label = case["reference"]
        assert re.fullmatch(r"\w+", label), case["id"]
        assert "label only" in case["input"], case["id"]
        assert re.search(rf"\b{re.escape(label)}\b", case["input"]), case["id"]


def test_arithmetic_references_are_right() -> None:
    cases = {case["id"]: case for case in by_task("arithmetic")}
    assert len(ARITHMETIC) >= 10
    assert set(cases) == set(ARITHMETIC)
    for cid, expected in ARITHMETIC.items():
        reference = cases[cid]["reference"]
        assert re.fullmatch(r"-?\d+(\.\d+)?", reference), (cid, reference)
        assert math.isclose(float(reference), expected, abs_tol=1e-9), (cid, reference, expected)
        assert "number only" in cases[cid]["input"], cid


def test_regex_patterns_compile_and_match_their_reference() -> None:
    patterns = 0
    for case in load_cases():
        for metric in metrics_named(case, "regex"):
            pattern = re.compile(metric["pattern"])
            patterns += 1
            assert pattern.search(case["reference"]), (case["id"], metric["pattern"])
            if case["id"] in ARITHMETIC:
                wrong = format(ARITHMETIC[case["id"]] + 1, ".2f")
                assert not pattern.search(wrong), (case["id"], metric["pattern"], wrong)
    assert patterns >= 10


def test_json_schemas_are_well_formed_and_fit_the_reference() -> None:
    json_cases = [case for case in load_cases() if metrics_named(case, "json_valid")]
    assert len(json_cases) >= 3
    for case in json_cases:
        assert task_of(case) == "extraction", case["id"]
        assert "JSON" in case["input"], case["id"]
        for metric in metrics_named(case, "json_valid"):
            schema = metric["schema"]
            check_schema(schema)
            assert conforms(json.loads(case["reference"]), schema), case["id"]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_references_are_short(task: str) -> None:
    for case in by_task(task):
        assert len(case["reference"]) <= 400, case["id"]
