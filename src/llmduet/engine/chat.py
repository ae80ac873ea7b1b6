"""Chat messages to prompt tokens with the GGUF's own chat template.

Templates of small models often know nothing of tools, so tool traffic is rendered as
plain text they can read: the tool list joins the system message, an assistant's tool
calls become the JSON the model is asked to produce, and tool results become messages
of role ``tool``.
"""

from __future__ import annotations

import json
from typing import Any

from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from llmduet.engine.model import GGUFModel
from llmduet.errors import BadRequestError, InvalidModelFileError

TOOL_INSTRUCTIONS = (
    "You can call tools. To call one, reply with only a JSON object of the form "
    '{{"name": <tool name>, "arguments": <arguments object>}}. Available tools:\n{tools}'
)


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def tool_call_text(name: str, arguments: str | dict[str, Any]) -> str:
    args = json.loads(arguments) if isinstance(arguments, str) and arguments else arguments
    return json.dumps({"name": name, "arguments": args or {}})


def plain_messages(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> list[dict[str, str]]:
    """Messages every chat template can render: string content, tool traffic as text."""
    result: list[dict[str, str]] = []
    for message in messages:
        role = message.get("role", "user")
        role = "system" if role == "developer" else role
        content = _text(message.get("content"))
        calls = message.get("tool_calls") or []
        if role == "assistant" and calls:
            rendered = [
                tool_call_text(call["function"]["name"], call["function"].get("arguments", "{}"))
                for call in calls
            ]
            content = "\n".join(filter(None, [content, *rendered]))
        result.append({"role": role, "content": content})
    if tools:
        listing = "\n".join(json.dumps(tool.get("function", tool)) for tool in tools)
        instructions = TOOL_INSTRUCTIONS.format(tools=listing)
        if result and result[0]["role"] == "system":
            result[0] = {"role": "system", "content": f"{result[0]['content']}\n\n{instructions}"}
        else:
            result.insert(0, {"role": "system", "content": instructions})
    return result


class ChatFormatter:
    def __init__(self, model: GGUFModel) -> None:
        if not model.chat_template:
            raise InvalidModelFileError(
                f"{model.path} has no chat template in its metadata: use an instruct/chat GGUF"
            )
        self.model = model
        self._formatter = Jinja2ChatFormatter(
            template=model.chat_template,
            eos_token=model.eos_text,
            bos_token=model.bos_text,
        )

    def prompt_tokens(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        try:
            plain: Any = plain_messages(messages, tools)  # llama-cpp-python's TypedDicts
            rendered = self._formatter(messages=plain)
        except Exception as exc:  # the template may raise anything on odd input
            raise BadRequestError(f"the chat template rejected the messages: {exc}") from None
        return self.model.tokenize(rendered.prompt, add_special=not rendered.added_special)
