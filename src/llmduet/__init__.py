"""llmduet: build an LLM pipeline once, run it on ChatGPT and a self-hosted LLaMA side by
side, then in production as a privacy-aware hybrid."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmduet.config import ModelSpec, Settings, load_settings
from llmduet.models.base import ChatBackend, Readiness
from llmduet.models.registry import ModelRegistry, default_registry, register_provider
from llmduet.models.result import ChatResult
from llmduet.models.types import (
    ChatEvent,
    ChatRequest,
    Finish,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)

if TYPE_CHECKING:
    from llmduet.models.langchain import DuetChatModel

__version__ = "0.1.0"


def as_chat_model(name: str, registry: ModelRegistry | None = None, **params: Any) -> DuetChatModel:
    """A LangChain ``BaseChatModel`` for a registered model (imports LangChain lazily)."""
    from llmduet.models.langchain import as_chat_model as build

    return build(name, registry, **params)


__all__ = [
    "ChatBackend",
    "ChatEvent",
    "ChatRequest",
    "ChatResult",
    "Finish",
    "ModelRegistry",
    "ModelSpec",
    "Readiness",
    "Settings",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "__version__",
    "as_chat_model",
    "default_registry",
    "load_settings",
    "register_provider",
]
