"""Reference-based metrics: no model involved, each returns a float in [0, 1].

``exact_match`` and ``token_f1`` follow the official SQuAD evaluation script, so numbers
are comparable with published ones. ``json_valid`` checks structured output against a
JSON Schema subset with a small validator of its own (no extra dependency); a schema that
uses a keyword outside that subset raises ``ValueError`` instead of being passed silently.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "DETERMINISTIC",
    "contains",
    "exact_match",
    "json_valid",
    "normalize_answer",
    "regex_match",
    "schema_errors",
    "token_f1",
]

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_FENCE = re.compile(r"\A\s*```(?:json)?[ \t]*(?:\r?\n)?(.*?)\s*```\s*\Z", re.S | re.I)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop articles (a/an/the), collapse whitespace.

    The SQuAD v1.1 ``normalize_answer``, step for step and in the same order.
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _references(reference: str | Sequence[str]) -> list[str]:
    refs = [reference] if isinstance(reference, str) else list(reference)
    if not refs:
        raise ValueError("at least one reference answer is required")
    return refs


def exact_match(prediction: str, reference: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals a normalised reference (any of a list)."""
    pred = normalize_answer(prediction)
    return max(float(pred == normalize_answer(ref)) for ref in _references(reference))


def _f1(pred_tokens: list[str], ref_tokens: list[str]) -> float:
    if not pred_tokens or not ref_tokens:
        # SQuAD v1.1 scores this 0 even when both are empty; the v2.0 rule used here gives
        # 1.0 for empty vs empty, agreeing with exact_match. Non-empty inputs are unaffected.
        return float(pred_tokens == ref_tokens)
    common = Counter(pred_tokens) & Counter(ref_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, reference: str | Sequence[str]) -> float:
    """SQuAD token-overlap F1 after normalisation; the max over a list of references."""
    pred = normalize_answer(prediction).split()
    return max(_f1(pred, normalize_answer(ref).split()) for ref in _references(reference))


def contains(
    prediction: str, needle: str | Sequence[str], *, case_sensitive: bool = False
) -> float:
    """1.0 if ``needle`` (every one, for a list) occurs in ``prediction`` as a substring."""
    needles = [needle] if isinstance(needle, str) else list(needle)
    if not needles:
        raise ValueError("at least one needle is required")
    if case_sensitive:
        return float(all(n in prediction for n in needles))
    haystack = prediction.casefold()
    return float(all(n.casefold() in haystack for n in needles))


def regex_match(prediction: str, pattern: str, *, flags: int = 0) -> float:
    """1.0 if ``re.search(pattern, prediction)`` finds a match."""
    try:
        compiled = re.compile(pattern, flags)
    except re.error as err:
        raise ValueError(f"invalid regular expression {pattern!r}: {err}") from err
    return float(compiled.search(prediction) is not None)


# --- JSON ------------------------------------------------------------------------------

_TYPES = frozenset({"null", "boolean", "integer", "number", "string", "array", "object"})
_SUPPORTED = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "anyOf",
        "oneOf",
    }
)
# Annotations only: they never make a document invalid, so ignoring them is correct.
_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "format",
    }
)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _has_type(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":
        # As in JSON Schema: a number with no fractional part (1 and 1.0); never a boolean.
        if isinstance(value, float):
            return value.is_integer()
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return _is_number(value)
    if name == "string":
        return isinstance(value, str)
    if name == "array":
        return isinstance(value, list)
    return isinstance(value, dict)  # "object"


def _json_equal(x: Any, y: Any) -> bool:
    """Equality of JSON values: ``1 == 1.0``, but ``true != 1`` and ``false != 0``."""
    if isinstance(x, bool) or isinstance(y, bool):
        return isinstance(x, bool) and isinstance(y, bool) and x == y
    if _is_number(x) and _is_number(y):
        return bool(x == y)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_json_equal(a, b) for a, b in zip(x, y, strict=True))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_json_equal(x[k], y[k]) for k in x)
    return type(x) is type(y) and bool(x == y)


def _check_schema(schema: Any, where: str = "#") -> None:
    """Raise ``ValueError`` if ``schema`` is malformed or uses an unsupported keyword."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, Mapping):
        raise ValueError(f"schema at {where} must be an object or a boolean")
    unknown = sorted(set(schema) - _SUPPORTED - _ANNOTATIONS)
    if unknown:
        raise ValueError(f"unsupported JSON Schema keyword(s) at {where}: {', '.join(unknown)}")
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        bad = [n for n in names if not isinstance(n, str) or n not in _TYPES]
        if bad or not names:
            raise ValueError(f"unknown type(s) at {where}/type: {bad or names}")
    if "properties" in schema:
        if not isinstance(schema["properties"], Mapping):
            raise ValueError(f"{where}/properties must be an object")
        for name, sub in schema["properties"].items():
            _check_schema(sub, f"{where}/properties/{name}")
    if "required" in schema and not (
        isinstance(schema["required"], list) and all(isinstance(k, str) for k in schema["required"])
    ):
        raise ValueError(f"{where}/required must be a list of strings")
    for key in ("additionalProperties", "items"):
        if key in schema:
            _check_schema(schema[key], f"{where}/{key}")
    if "enum" in schema and not isinstance(schema["enum"], list):
        raise ValueError(f"{where}/enum must be a list")
    for key in ("minItems", "maxItems", "minLength", "maxLength"):
        if key in schema and not (
            isinstance(schema[key], int) and not isinstance(schema[key], bool) and schema[key] >= 0
        ):
            raise ValueError(f"{where}/{key} must be a non-negative integer")
    for key in ("minimum", "maximum"):
        if key in schema and not _is_number(schema[key]):
            raise ValueError(f"{where}/{key} must be a number")
    for key in ("anyOf", "oneOf"):
        if key in schema:
            if not isinstance(schema[key], list) or not schema[key]:
                raise ValueError(f"{where}/{key} must be a non-empty list of schemas")
            for i, sub in enumerate(schema[key]):
                _check_schema(sub, f"{where}/{key}/{i}")


def _errors(value: Any, schema: Any, path: str) -> list[str]:
    """Every violation of ``schema`` by ``value``, as ``"<path>: <reason>"`` strings."""
    if schema is True:
        return []
    if schema is False:
        return [f"{path}: no value is allowed here"]
    errors: list[str] = []
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_has_type(value, n) for n in names):
            return [f"{path}: expected {' or '.join(names)}, got {json.dumps(value)[:60]}"]
    if "const" in schema and not _json_equal(value, schema["const"]):
        errors.append(f"{path}: must equal {json.dumps(schema['const'])}")
    if "enum" in schema and not any(_json_equal(value, v) for v in schema["enum"]):
        errors.append(f"{path}: must be one of {json.dumps(schema['enum'])}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
    if _is_number(value):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: less than the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: greater than the maximum {schema['maximum']}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                errors.extend(_errors(item, schema["items"], f"{path}[{i}]"))
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        errors.extend(
            f"{path}: missing required property {key!r}"
            for key in schema.get("required", [])
            if key not in value
        )
        for key, item in value.items():
            if key in properties:
                errors.extend(_errors(item, properties[key], f"{path}.{key}"))
            elif "additionalProperties" in schema:
                extra = schema["additionalProperties"]
                if extra is False:
                    errors.append(f"{path}: unexpected property {key!r}")
                else:
                    errors.extend(_errors(item, extra, f"{path}.{key}"))
    if "anyOf" in schema and not any(not _errors(value, s, path) for s in schema["anyOf"]):
        errors.append(f"{path}: matches none of the anyOf schemas")
    if "oneOf" in schema:
        matched = sum(not _errors(value, s, path) for s in schema["oneOf"])
        if matched != 1:
            errors.append(f"{path}: matches {matched} of the oneOf schemas, not exactly one")
    return errors


def schema_errors(value: Any, schema: Mapping[str, Any] | bool) -> list[str]:
    """Violations of ``schema`` by the parsed JSON ``value``; empty when it is valid.

    Supports ``type`` (a name or list; integer vs number; booleans are not numbers),
    ``properties``, ``required``, ``additionalProperties`` (a boolean or a schema),
    ``items`` (one schema for every item), ``enum``, ``const``, ``minItems``/``maxItems``,
    ``minLength``/``maxLength``, ``minimum``/``maximum``, ``anyOf`` and ``oneOf``. Annotation
    keywords (``title``, ``description``, ``format``, ...) are ignored; any other keyword
    raises ``ValueError`` rather than being skipped.
    """
    _check_schema(schema)
    return _errors(value, schema, "$")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _strip_fence(text: str) -> str:
    match = _FENCE.match(text)
    return match.group(1) if match else text


def json_valid(prediction: str, schema: Mapping[str, Any] | bool | None = None) -> float:
    """1.0 if ``prediction`` parses as strict JSON and, given ``schema``, satisfies it.

    One surrounding Markdown code fence (```` ```json ... ``` ```` or a bare ```` ``` ````) is
    stripped first. ``NaN`` and ``Infinity`` are not JSON and fail. A malformed or
    unsupported ``schema`` raises ``ValueError`` whatever the prediction.
    """
    if schema is not None:
        _check_schema(schema)
    try:
        value = json.loads(_strip_fence(prediction), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return 0.0
    if schema is None:
        return 1.0
    return float(not _errors(value, schema, "$"))


DETERMINISTIC: dict[str, Callable[..., float]] = {
    "exact_match": exact_match,
    "token_f1": token_f1,
    "contains": contains,
    "regex": regex_match,
    "json_valid": json_valid,
}
