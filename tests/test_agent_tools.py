"""Agent tools: schemas from typed functions, validation, timeouts, errors as results."""

from __future__ import annotations

import asyncio
from typing import Literal

import pytest

from llmduet.agents.builtin_tools import calculate, calculator_tool, current_datetime, datetime_tool
from llmduet.agents.tools import Tool, tool


def convert(amount: float, currency: Literal["EUR", "USD"], rounded: bool = True) -> str:
    """Convert an amount of money to a currency."""
    return f"{round(amount) if rounded else amount} {currency}"


def test_schema_comes_from_the_type_hints_and_docstring() -> None:
    converter = Tool.from_function(convert)
    assert converter.to_openai() == {
        "type": "function",
        "function": {
            "name": "convert",
            "description": "Convert an amount of money to a currency.",
            "parameters": {
                "type": "object",
                "properties": {
                    "amount": {"type": "number"},
                    "currency": {"enum": ["EUR", "USD"], "type": "string"},
                    "rounded": {"default": True, "type": "boolean"},
                },
                "required": ["amount", "currency"],
            },
        },
    }
    with pytest.raises(TypeError, match="needs a type hint"):
        Tool.from_function(lambda x: x, description="untyped")
    with pytest.raises(TypeError, match="docstring"):

        def bare(x: int) -> int:
            return x

        Tool.from_function(bare)


async def test_bad_calls_and_failures_come_back_as_error_results() -> None:
    converter = Tool.from_function(convert)
    assert (await converter.run('{"amount": 9.6, "currency": "EUR"}')).content == "10 EUR"
    assert (
        await converter.run({"amount": 2.5, "currency": "USD", "rounded": False})
    ).content == "2.5 USD"
    for arguments, message in [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"amount": "lots", "currency": "EUR"}', "amount: Input should be a valid number"),
        ('{"amount": 1}', "currency: Field required"),
        ('{"amount": 1, "currency": "GBP"}', "currency: Input should be 'EUR' or 'USD'"),
    ]:
        result = await converter.run(arguments)
        assert result.error and message in result.content, result.content

    @tool
    def explode(reason: str) -> str:
        """Always fails."""
        raise RuntimeError(reason)

    failed = await explode.run({"reason": "disk on fire"})
    assert failed.error and failed.content == "error: explode failed: RuntimeError: disk on fire"


async def test_a_slow_tool_times_out_without_blocking_the_loop() -> None:
    @tool(timeout_s=0.2)
    async def slow(seconds: float) -> str:
        """Sleeps."""
        await asyncio.sleep(seconds)
        return "done"

    result, other = await asyncio.gather(slow.run({"seconds": 30}), slow.run({"seconds": 0.01}))
    assert result.error and "took longer than 0.2 s" in result.content
    assert other.content == "done"


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("(12.5 * 4) / 3", 50 / 3),
        ("2 ** 10 - 1", 1023),
        ("-7 // 2 + 17 % 5", -2),
        ("sqrt(16) + max(1, 2)", 6.0),
        ("round(pi, 2)", 3.14),
    ],
)
def test_calculator_evaluates_arithmetic(expression: str, value: float) -> None:
    assert calculate(expression) == pytest.approx(value)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('echo hi')", "not plain arithmetic"),
        ("open('/etc/passwd').read()", "not plain arithmetic"),
        ("(1).__class__", "not plain arithmetic"),
        ("2 ** 100000", "exponents above 1000"),
        ("9 ** 999 * 9 ** 999", "too large"),
        ("1 / 0", "division by zero"),
        ("2 +", "not an arithmetic expression"),
        ("True + 1", "booleans"),
        ("1" * 600, "longer than 500"),
    ],
)
def test_calculator_refuses_anything_but_arithmetic(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        calculate(expression)


async def test_builtin_tools_as_tools() -> None:
    calculator = calculator_tool()
    assert calculator.name == "calculator"
    assert (await calculator.run({"expression": "6 * 7"})).content == "42"
    refused = await calculator.run({"expression": "__import__('os')"})
    assert refused.error and "not plain arithmetic" in refused.content
    now = await datetime_tool().run({"timezone_offset_hours": 2})
    assert not now.error and now.content.endswith("+02:00")
    assert current_datetime()[:2] == "20"
