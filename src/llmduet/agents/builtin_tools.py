"""The tools every team may use: arithmetic, the date and time, and search over a RAG
index. Nothing here reaches the shell, the file system beyond the index, or the network.
"""

from __future__ import annotations

import ast
import datetime as dt
import math
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmduet.agents.tools import Tool

MAX_EXPONENT = 1000
MAX_DIGITS = 400
MAX_LENGTH = 500

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
}


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, bool):
            raise ValueError("booleans are not numbers here")
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError(f"exponents above {MAX_EXPONENT} are not allowed")
        value = _BINARY[type(node.op)](left, right)
        if isinstance(value, int) and value.bit_length() > MAX_DIGITS * 4:
            raise ValueError("the result is too large")
        return value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        return _FUNCTIONS[node.func.id](*(_evaluate(arg) for arg in node.args))
    if isinstance(node, ast.Name) and node.id in ("pi", "e"):
        return math.pi if node.id == "pi" else math.e
    raise ValueError(f"'{ast.unparse(node)}' is not plain arithmetic")


def calculate(expression: str) -> int | float:
    """Evaluate an arithmetic expression: numbers, + - * / // % **, parentheses, pi, e,
    sqrt, abs, round, min, max. Example: (12.5 * 4) / 3"""
    if len(expression) > MAX_LENGTH:
        raise ValueError(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"'{expression}' is not an arithmetic expression") from None
    try:
        return _evaluate(tree)
    except ZeroDivisionError:
        raise ValueError("division by zero") from None


def current_datetime(timezone_offset_hours: float = 0.0) -> str:
    """The current date and time in ISO 8601, at a UTC offset in hours (default UTC)."""
    if not -14 <= timezone_offset_hours <= 14:
        raise ValueError("the offset must be between -14 and +14 hours")
    zone = dt.timezone(dt.timedelta(hours=timezone_offset_hours))
    return dt.datetime.now(zone).isoformat(timespec="seconds")


def calculator_tool() -> Tool:
    return Tool.from_function(calculate, name="calculator", timeout_s=2.0)


def datetime_tool() -> Tool:
    return Tool.from_function(current_datetime, timeout_s=1.0)


def rag_search_tool(index: Path, k: int = 4) -> Tool:
    """Search the documents of an index (opened once, on first use)."""
    opened: dict[str, Any] = {}

    def search_documents(query: str) -> list[dict[str, Any]]:
        """Search the company documents; returns the best passages with their sources."""
        if "retriever" not in opened:
            from llmduet.rag.index import open_retriever

            opened["retriever"] = open_retriever(index)
        hits = opened["retriever"].search(query, k)
        return [
            {"n": n, "source": h.chunk.source, "heading": h.chunk.heading, "text": h.chunk.text}
            for n, h in enumerate(hits, 1)
        ]

    return Tool.from_function(search_documents, timeout_s=30.0)
