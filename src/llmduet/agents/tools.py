"""Tools for agents, declared from typed Python functions.

``Tool.from_function(f)`` derives the JSON schema of the arguments from ``f``'s type hints
and defaults (through pydantic, so nested types, ``Literal`` and optional arguments work)
and the description from its docstring. ``await tool.run(arguments)`` validates the
model's arguments, runs the function with a timeout (synchronous functions on a worker
thread, which an overrunning function keeps until it returns: Python threads cannot be
killed) and always returns a :class:`ToolResult`: a bad call or a failure comes back as
an error message for the model to read and correct, never as an exception that ends the
run.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic import BaseModel, ValidationError, create_model

DEFAULT_TIMEOUT_S = 10.0
MAX_RESULT_CHARS = 4000


@dataclass(frozen=True, slots=True)
class ToolResult:
    content: str
    error: bool = False
    seconds: float = 0.0


def _arguments_model(function: Callable[..., Any]) -> type[BaseModel]:
    hints = get_type_hints(function)
    fields: dict[str, Any] = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"tool {function.__name__}: *args and **kwargs cannot be described")
        if name not in hints:
            raise TypeError(f"tool {function.__name__}: argument '{name}' needs a type hint")
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[name] = (hints[name], default)
    return create_model(f"{function.__name__}_arguments", **fields)


def _describe(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= MAX_RESULT_CHARS else text[:MAX_RESULT_CHARS] + " [truncated]"


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    function: Callable[..., Any]
    arguments: type[BaseModel]
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def from_function(
        cls,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> Tool:
        summary = description or inspect.getdoc(function) or ""
        if not summary:
            raise TypeError(f"tool {function.__name__}: give it a docstring or a description")
        return cls(
            name or function.__name__, summary, function, _arguments_model(function), timeout_s
        )

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON schema of the arguments, as OpenAI's ``tools`` expects it."""
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        for field in schema.get("properties", {}).values():
            field.pop("title", None)
        return schema

    def to_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    async def run(self, arguments: str | dict[str, Any]) -> ToolResult:
        started = time.perf_counter()

        def done(content: str, error: bool = False) -> ToolResult:
            return ToolResult(content, error, time.perf_counter() - started)

        try:
            raw = json.loads(arguments or "{}") if isinstance(arguments, str) else arguments
        except json.JSONDecodeError as exc:
            return done(
                f"error: the arguments are not valid JSON ({exc.msg}); send an object", True
            )
        if not isinstance(raw, dict):
            return done("error: the arguments must be a JSON object", True)
        try:
            parsed = self.arguments.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors()
            )
            return done(f"error: invalid arguments for {self.name}: {problems}", True)
        values = {name: getattr(parsed, name) for name in type(parsed).model_fields}
        try:
            if inspect.iscoroutinefunction(self.function):
                result = await asyncio.wait_for(self.function(**values), self.timeout_s)
            else:
                result = await asyncio.wait_for(
                    asyncio.to_thread(self.function, **values), self.timeout_s
                )
        except TimeoutError:
            return done(f"error: {self.name} took longer than {self.timeout_s:g} s", True)
        except Exception as exc:  # a tool's failure is the model's to read, not the run's
            return done(f"error: {self.name} failed: {type(exc).__name__}: {exc}", True)
        return done(_describe(result))


def tool(
    function: Callable[..., Any] | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Any:
    """Decorator form: ``@tool`` or ``@tool(timeout_s=2)`` turns a function into a Tool."""
    if function is None:
        return lambda f: Tool.from_function(f, timeout_s=timeout_s)
    return Tool.from_function(function, timeout_s=timeout_s)
