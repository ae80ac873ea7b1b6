"""The shipped agent task set is well formed and every fact and computation holds up."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest

from jsonl import read_jsonl

DATA = Path(__file__).parent.parent / "src/llmduet/data"
TASKS = DATA / "agent_tasks.jsonl"
DOCS = DATA / "handbook/docs"

EXPECTED_COUNT = 18
REQUIRED_KEYS = {"id", "task", "answer", "facts", "computation"}
ID_PATTERN = re.compile(r"^task-\d{2}$")
# Canonical answers: integers without decimals, money with exactly two decimals.
ANSWER_PATTERN = re.compile(r"^(0|[1-9]\d*)(\.\d{2})?$")
COMPUTATION_CHARS = re.compile(r"^[0-9 +\-*/().]+$")
TOLERANCE = 0.005

BINARY_OPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}
UNARY_OPS = {
    ast.UAdd: lambda a: +a,
    ast.USub: lambda a: -a,
}


def load_tasks() -> list[dict]:
    return read_jsonl(TASKS)


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"unsupported constant {value!r}")
        return value
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY_OPS:
        return BINARY_OPS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY_OPS:
        return UNARY_OPS[type(node.op)](_evaluate(node.operand))
    raise ValueError(f"unsupported syntax: {type(node).__name__}")


def parse_computation(expression: str) -> ast.Expression:
    if not COMPUTATION_CHARS.fullmatch(expression):
        raise ValueError(f"disallowed characters in {expression!r}")
    tree = ast.parse(expression, mode="eval")
    for node in ast.walk(tree):
        allowed = (
            isinstance(node, (ast.Expression, ast.Constant))
            or (isinstance(node, ast.BinOp) and type(node.op) in BINARY_OPS)
            or (isinstance(node, ast.UnaryOp) and type(node.op) in UNARY_OPS)
            or type(node) in BINARY_OPS
            or type(node) in UNARY_OPS
        )
        if not allowed:
            raise ValueError(f"unsupported syntax: {type(node).__name__}")
    return tree


def compute(expression: str) -> float:
    """Evaluate a literal arithmetic expression without eval()."""
    return _evaluate(parse_computation(expression))


def operator_count(expression: str) -> int:
    tree = parse_computation(expression)
    return sum(isinstance(node, ast.BinOp) for node in ast.walk(tree))


def task_ids() -> list[str]:
    return [task["id"] for task in load_tasks()]


def by_id(task_id: str) -> dict:
    (task,) = [task for task in load_tasks() if task["id"] == task_id]
    return task


# --- the safe evaluator itself -------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("30 - 15", 15),
        ("75 * 3 + 75 * 0.5 * 2", 300),
        ("(1 + 2) * 3", 9),
        ("-4 + 10", 6),
        ("1 / 4", 0.25),
    ],
)
def test_compute_evaluates_plain_arithmetic(expression: str, expected: float) -> None:
    assert math.isclose(compute(expression), expected)


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os')",
        "2 ** 10",
        "7 % 3",
        "7 // 2",
        "abs(-1)",
        "x + 1",
        "1e3",
        "[1, 2]",
        "1 if 1 else 2",
        "",
    ],
)
def test_compute_rejects_anything_else(expression: str) -> None:
    with pytest.raises((ValueError, SyntaxError)):
        compute(expression)


def test_operator_count() -> None:
    assert operator_count("26 - 15") == 1
    assert operator_count("500 + 30 * 12") == 2
    assert operator_count("(24 - 16) - 5") == 2


# --- the shipped file ----------------------------------------------------------


def test_file_parses_and_has_expected_count() -> None:
    assert len(load_tasks()) == EXPECTED_COUNT


def test_ids_unique_and_sequential() -> None:
    ids = task_ids()
    assert len(set(ids)) == len(ids), "duplicate ids"
    assert all(ID_PATTERN.fullmatch(task_id) for task_id in ids), ids
    assert ids == [f"task-{n:02d}" for n in range(1, EXPECTED_COUNT + 1)]


@pytest.mark.parametrize("task_id", task_ids())
def test_fields_have_right_types(task_id: str) -> None:
    task = by_id(task_id)
    assert set(task) == REQUIRED_KEYS, f"{task_id}: keys {sorted(task)}"
    assert isinstance(task["task"], str) and task["task"].strip()
    assert isinstance(task["answer"], str) and task["answer"].strip()
    assert isinstance(task["computation"], str) and task["computation"].strip()
    assert isinstance(task["facts"], list) and 1 <= len(task["facts"]) <= 2
    for fact in task["facts"]:
        assert isinstance(fact, dict) and set(fact) == {"source", "quote"}, fact
        assert isinstance(fact["source"], str) and fact["source"].strip()
        assert isinstance(fact["quote"], str) and fact["quote"].strip()


@pytest.mark.parametrize("task_id", task_ids())
def test_answer_is_canonical_number(task_id: str) -> None:
    answer = by_id(task_id)["answer"]
    assert ANSWER_PATTERN.fullmatch(answer), f"{task_id}: non-canonical answer {answer!r}"


@pytest.mark.parametrize("task_id", task_ids())
def test_quotes_are_exact_substrings_of_sources(task_id: str) -> None:
    for fact in by_id(task_id)["facts"]:
        source = fact["source"]
        assert Path(source).name == source, f"{task_id}: source must be a bare file name"
        path = DOCS / source
        assert path.is_file(), f"{task_id}: unknown source {source}"
        if path.suffix == ".pdf":
            continue
        assert path.suffix in {".md", ".html"}, f"{task_id}: unexpected source type {source}"
        text = path.read_text(encoding="utf-8")
        assert fact["quote"] in text, f"{task_id}: quote not found in {source}: {fact['quote']!r}"


@pytest.mark.parametrize("task_id", task_ids())
def test_computation_yields_answer(task_id: str) -> None:
    task = by_id(task_id)
    assert operator_count(task["computation"]) >= 1, f"{task_id}: no arithmetic"
    value = compute(task["computation"])
    expected = float(task["answer"])
    assert abs(value - expected) <= TOLERANCE, (
        f"{task_id}: {task['computation']} = {value}, answer {expected}"
    )


@pytest.mark.parametrize("task_id", task_ids())
def test_answer_not_given_away_in_task(task_id: str) -> None:
    task = by_id(task_id)
    numbers = re.findall(r"\d[\d,]*(?:\.\d+)?", task["task"])
    values = {float(n.replace(",", "")) for n in numbers}
    assert float(task["answer"]) not in values, f"{task_id}: the answer appears in the task text"


def test_difficulty_mix() -> None:
    tasks = load_tasks()
    hard = [t for t in tasks if len(t["facts"]) >= 2 or operator_count(t["computation"]) >= 2]
    easy = [t for t in tasks if len(t["facts"]) == 1 and operator_count(t["computation"]) == 1]
    assert len(hard) >= 12, f"only {len(hard)} multi-step tasks"
    assert len(easy) == len(tasks) - len(hard)
