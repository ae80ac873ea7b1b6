"""Grammar-constrained output: JSON, JSON matching a schema, and tool calls.

Constraints are llama.cpp GBNF grammars applied while sampling, so even a 135M model can
only produce text that parses. A tool call is generated as
``{"name": ..., "arguments": {...}}`` where ``arguments`` follows the tool's schema.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from llmduet.errors import BadRequestError

# Free text that cannot start with "{", so a reply is either prose or one tool call.
_FREE_TEXT_RULES = "free ::= [^{\\x00] [^\\x00]*\n"


def schema_grammar(schema: dict[str, Any]) -> str:
    try:
        return json_schema_to_gbnf(json.dumps(schema), prop_order=["name", "arguments"])
    except Exception as exc:  # the converter raises many types for schemas it rejects
        raise BadRequestError(f"invalid JSON schema: {exc}") from None


def json_object_grammar() -> str:
    return JSON_GBNF


def _tool_schema(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool["function"]
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    return {
        "type": "object",
        "properties": {"name": {"const": function["name"]}, "arguments": parameters},
        "required": ["name", "arguments"],
    }


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """What a request's ``tools`` and ``tool_choice`` mean for generation."""

    grammar: str | None  # None: tools are off (tool_choice "none" or no tools)
    forced: bool  # the reply must be a tool call
    tools: list[dict[str, Any]]


def plan_tools(
    tools: list[dict[str, Any]] | None, tool_choice: str | dict[str, Any] | None
) -> ToolPlan:
    if not tools or tool_choice == "none":
        return ToolPlan(None, False, [])
    names = [tool["function"]["name"] for tool in tools]
    chosen = tools
    if isinstance(tool_choice, dict):
        wanted = tool_choice.get("function", {}).get("name")
        chosen = [tool for tool in tools if tool["function"]["name"] == wanted]
        if not chosen:
            raise BadRequestError(
                f"tool_choice names '{wanted}', which is not among the tools: {', '.join(names)}"
            )
    schemas = [_tool_schema(tool) for tool in chosen]
    call = schema_grammar(schemas[0] if len(schemas) == 1 else {"oneOf": schemas})
    forced = tool_choice == "required" or isinstance(tool_choice, dict)
    if forced:
        return ToolPlan(call, True, chosen)
    renamed = re.sub(r"^root ::=", "call ::=", call, count=1, flags=re.MULTILINE)
    return ToolPlan(f"root ::= call | free\n{renamed}\n{_FREE_TEXT_RULES}", False, tools)


def parse_tool_call(text: str, plan: ToolPlan) -> dict[str, Any] | None:
    """The OpenAI ``tool_calls`` entry for a reply, or None when it is prose."""
    stripped = text.strip()
    if not plan.grammar or not stripped.startswith("{"):
        return None
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError:
        return None
    allowed = {tool["function"]["name"] for tool in plan.tools}
    if not isinstance(data, dict) or data.get("name") not in allowed:
        return None
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": data["name"], "arguments": json.dumps(data.get("arguments", {}))},
    }
