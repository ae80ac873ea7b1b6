"""Run a dataset through a pipeline on several models at once, resumably.

Every (model, case) pair is one task; each model has its own bounded pool, so a slow
model never starves a fast one and all models advance together. A finished answer is
written to the cache before the next one starts: Ctrl-C or a crash loses nothing, and
the next run with the same inputs skips what is done. A case that fails on a model is
recorded as an error for that case (and tried again next run); the run goes on. A model
that cannot run at all (no key, no file) is reported as skipped, with the reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmduet.errors import DuetError
from llmduet.evals.cache import ResultCache, cache_key
from llmduet.evals.dataset import EvalCase
from llmduet.evals.pipelines import Pipeline, PipelineOutput
from llmduet.models.registry import ModelRegistry

Progress = Callable[[str, bool], None]  # (model, served from the cache)


@dataclass(slots=True)
class RunResult:
    records: list[dict[str, Any]]
    skipped_models: dict[str, str] = field(default_factory=dict)  # model -> why
    cached: int = 0
    pairwise: list[dict[str, Any]] | None = None  # head-to-head verdicts, when asked for


def model_identity(registry: ModelRegistry, name: str) -> Any:
    """What decides a model's answers: its settings entry (or its backend's name)."""
    if name in registry.settings.models:
        spec = registry.settings.models[name].model_dump(  # what cannot change an answer
            exclude={
                "max_retries",
                "timeout_s",
                "usd_per_hour",
                "location",
                "threads",
                "max_sequences",
            }
        )
        return {"name": name, **spec}
    return {"name": name, "backend": registry.backend(name).name}


def record_of(case: EvalCase, model: str, location: str, output: PipelineOutput) -> dict[str, Any]:
    result = output.result
    usage = result.usage if result else None
    return {
        "case_id": case.id,
        "model": model,
        "location": location,
        "text": output.text,
        "error": None,
        "ttft_s": result.ttft_s if result else None,
        "itl_s": result.itl_s if result else [],
        "tpot_s": result.tpot_s if result else None,
        "total_s": result.total_s if result else output.total_s,
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "output_tokens": result.output_tokens if result else None,
        "cost_usd": result.cost_usd if result else None,
        "contexts": output.contexts,
        "retrieved_sources": output.retrieved_sources,
        "retrieval_ms": output.retrieval_ms,
    }


class EvalRunner:
    def __init__(
        self,
        registry: ModelRegistry,
        pipeline: Pipeline,
        models: list[str],
        cache: ResultCache,
        *,
        concurrency: int = 4,
        on_progress: Progress | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.registry = registry
        self.pipeline = pipeline
        self.models = models
        self.cache = cache
        self.concurrency = concurrency
        self.on_progress = on_progress

    def key(self, model: str, case: EvalCase) -> str:
        return cache_key(
            model_identity(self.registry, model),
            self.pipeline.identity(),
            case.messages,
        )

    async def _one(
        self, model: str, location: str, case: EvalCase, pool: asyncio.Semaphore
    ) -> dict[str, Any]:
        key = self.key(model, case)
        cached = self.cache.get(key)
        if cached is not None:
            if self.on_progress:
                self.on_progress(model, True)
            return {**cached, **self._priced(model, cached), "case_id": case.id, "cached": True}
        async with pool:
            try:
                record = record_of(case, model, location, await self.pipeline.run(case, model))
            except Exception as exc:  # a case's failure, whatever raised it, is that case's
                message = str(exc) if isinstance(exc, DuetError) else f"{type(exc).__name__}: {exc}"
                record = {
                    "case_id": case.id,
                    "model": model,
                    "location": location,
                    "text": "",
                    "error": message,
                }
            else:  # written (and fsynced) off the event loop, so other cases go on
                await asyncio.to_thread(self.cache.put, key, record)
        if self.on_progress:
            self.on_progress(model, False)
        return {**record, "cached": False}

    def _priced(self, model: str, record: dict[str, Any]) -> dict[str, Any]:
        """A cached record's cost at today's prices (prices are not part of the key)."""
        if record.get("total_s") is None or record.get("cost_usd") is None:
            return {}
        cost = self.registry.backend(model).cost_model.cost(
            record.get("prompt_tokens") or 0, record.get("output_tokens") or 0, record["total_s"]
        )
        return {"cost_usd": cost}

    async def run(self, cases: list[EvalCase]) -> RunResult:
        outcome = RunResult([])
        tasks = []
        for model in self.models:
            backend = self.registry.backend(model)
            readiness = backend.readiness()
            if not readiness.ready:
                outcome.skipped_models[model] = readiness.reason or "not ready"
                continue
            try:
                await backend.prepare()
            except DuetError as exc:
                outcome.skipped_models[model] = str(exc)
                continue
            pool = asyncio.Semaphore(self.concurrency)
            tasks += [self._one(model, backend.location, case, pool) for case in cases]
        outcome.records = list(await asyncio.gather(*tasks))
        outcome.cached = sum(bool(r.get("cached")) for r in outcome.records)
        return outcome
