"""What an evaluation runs per case: a chat call, a RAG answer, or the user's own chain.

A pipeline turns one case and one registered model into a :class:`PipelineOutput`: the
answer, what was retrieved, and the model layer's :class:`ChatResult` (exact usage,
timestamps, cost) when the pipeline can see it. ``--pipeline module:factory`` names a
function that takes a LangChain chat model and returns a Runnable or a callable, so users
evaluate their own chains on every model.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llmduet.errors import ConfigError
from llmduet.evals.dataset import EvalCase
from llmduet.models.registry import ModelRegistry
from llmduet.models.result import ChatResult
from llmduet.models.types import ChatRequest


@dataclass(slots=True)
class PipelineOutput:
    text: str
    result: ChatResult | None = None  # the generation, when the pipeline made one call
    total_s: float | None = None  # end-to-end time when there is no single ChatResult
    contexts: list[str] = field(default_factory=list)  # passages the answer was built on
    retrieved_sources: list[str] = field(default_factory=list)
    retrieval_ms: float | None = None


class Pipeline(Protocol):
    name: str

    def identity(self) -> dict[str, Any]:
        """What, besides the model and case, decides the output (part of the cache key)."""
        ...

    async def run(self, case: EvalCase, model: str) -> PipelineOutput: ...


@dataclass(slots=True)
class ChatPipeline:
    """The case's messages sent as they are."""

    registry: ModelRegistry
    options: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens, seed
    name: str = "chat"

    def identity(self) -> dict[str, Any]:
        return {"pipeline": self.name, **self.options}

    async def run(self, case: EvalCase, model: str) -> PipelineOutput:
        backend = self.registry.backend(model)
        result = await backend.complete(ChatRequest(messages=case.messages, **self.options))
        return PipelineOutput(result.text, result)


@dataclass(slots=True)
class RagPipeline:
    """Retrieve from an index, then answer from the numbered passages (``duet rag ask``)."""

    registry: ModelRegistry
    index: Path
    k: int = 5
    options: dict[str, Any] = field(default_factory=dict)
    name: str = "rag"
    _retriever: Any = None

    def identity(self) -> dict[str, Any]:
        from llmduet.rag.index import read_manifest

        manifest = read_manifest(self.index)
        files = manifest.get("files", {})
        return {
            "pipeline": self.name,
            "index_content": sorted(f"{source}:{digest}" for source, digest in files.items()),
            "embedder": manifest.get("embedder"),
            "k": self.k,
            **self.options,
        }

    def retriever(self) -> Any:
        if self._retriever is None:
            from llmduet.rag.index import open_retriever

            self._retriever = open_retriever(self.index)
        return self._retriever

    async def run(self, case: EvalCase, model: str) -> PipelineOutput:
        from llmduet.rag.answer import NOT_FOUND, ground

        prompt = await asyncio.to_thread(ground, self.retriever(), case.question, self.k)
        contexts = [hit.chunk.text for hit in prompt.hits]
        sources = [hit.chunk.source for hit in prompt.hits]
        if not prompt.relevant:
            return PipelineOutput(
                NOT_FOUND, None, prompt.retrieval_ms / 1000, contexts, sources, prompt.retrieval_ms
            )
        backend = self.registry.backend(model)
        result = await backend.complete(prompt.request(**self.options))
        return PipelineOutput(result.text, result, None, contexts, sources, prompt.retrieval_ms)


@dataclass(slots=True)
class CustomPipeline:
    """``module:factory``: ``factory(chat_model)`` returns a Runnable or a callable taking
    the case's question (a single user message) or its message list."""

    registry: ModelRegistry
    target: str
    options: dict[str, Any] = field(default_factory=dict)
    name: str = "custom"
    _built: dict[str, Any] = field(default_factory=dict)
    _factory: Any = None

    def __post_init__(self) -> None:
        self.name = self.target
        self._factory = load_factory(self.target)

    def identity(self) -> dict[str, Any]:
        return {"pipeline": self.target, **self.options}

    def _pipeline(self, model: str) -> Any:
        if model not in self._built:
            from llmduet.models.langchain import as_chat_model

            self._built[model] = self._factory(as_chat_model(model, self.registry, **self.options))
        return self._built[model]

    async def run(self, case: EvalCase, model: str) -> PipelineOutput:
        pipeline = self._pipeline(model)
        single = len(case.messages) == 1
        argument: Any = case.question if single else case.messages
        started = time.perf_counter()
        if hasattr(pipeline, "ainvoke"):
            output = await pipeline.ainvoke(argument)
        elif inspect.iscoroutinefunction(pipeline):
            output = await pipeline(argument)
        else:  # a blocking callable (it may call model.invoke) runs off the event loop
            output = await asyncio.to_thread(pipeline, argument)
            if inspect.isawaitable(output):
                output = await output
        return PipelineOutput(answer_text(output), None, time.perf_counter() - started)


def answer_text(output: Any) -> str:
    """The text of what a chain returned: a string, a message, or a dict with an answer."""
    if isinstance(output, str):
        return output
    content = getattr(output, "content", None)
    if isinstance(content, str):
        return content
    if isinstance(output, dict):
        for key in ("answer", "output", "text", "content"):
            if isinstance(output.get(key), str):
                return str(output[key])
    return str(output)


def load_factory(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"--pipeline {target}: give chat, rag or module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--pipeline {target}: cannot import {module_name} ({exc})") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigError(f"--pipeline {target}: {module_name} has no callable '{attribute}'")
    return factory


@dataclass(frozen=True, slots=True)
class PipelineRecipe:
    """How to build a pipeline: enough to build the same one again in another process."""

    kind: str  # chat, rag, or module:factory
    options: dict[str, Any] = field(default_factory=dict)
    index: str | None = None
    k: int = 5

    def build(self, registry: ModelRegistry) -> Pipeline:
        if self.kind == "chat":
            return ChatPipeline(registry, dict(self.options))
        if self.kind == "rag":
            from llmduet.rag.index import MANIFEST

            if self.index is None:
                raise ConfigError(
                    "--pipeline rag needs --index DIR (build one with `duet rag ingest`)"
                )
            index = Path(self.index)
            if not (index / MANIFEST).exists():
                raise ConfigError(
                    f"no index at {index}: run `duet rag ingest PATH --index {index}` first"
                )
            return RagPipeline(registry, index, self.k, dict(self.options))
        return CustomPipeline(registry, self.kind, dict(self.options))
