"""``duet eval --ray``: each case's pipeline call runs as a Ray task.

The driver keeps everything else — the cache, scoring, the report — so a Ray run and a
local run share cache entries and give identical results for deterministic models. Each
worker builds the registry from the driver's settings and the pipeline from its recipe
once, keeps them (and one event loop, which clients such as the OpenAI SDK's are bound
to) for the tasks it runs after, and returns the answer or the error's message. Models
and indexes are reached from the workers: a GGUF path or index folder must exist on
every node (a shared disk), endpoints must be reachable from them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from llmduet.config import Settings
from llmduet.errors import BackendError, ConfigError, DuetError
from llmduet.evals.dataset import EvalCase
from llmduet.evals.pipelines import Pipeline, PipelineOutput, PipelineRecipe
from llmduet.models.registry import ModelRegistry

_WORKER: dict[str, Any] = {}  # per worker process: the loop and the built pipelines


def run_case(
    settings: Settings, recipe: PipelineRecipe, case: EvalCase, model: str
) -> PipelineOutput | str:
    """In a worker: the pipeline's output, or the message of the error it raised."""
    loop = _WORKER.setdefault("loop", asyncio.new_event_loop())
    key = repr((settings.model_dump_json(), recipe))
    pipelines: dict[str, Pipeline] = _WORKER.setdefault("pipelines", {})
    try:
        if key not in pipelines:
            pipelines[key] = recipe.build(ModelRegistry(settings))
        return loop.run_until_complete(pipelines[key].run(case, model))
    except DuetError as exc:
        return str(exc)


class RayPipeline:
    """The same pipeline, its calls sent to Ray; cache keys are the local pipeline's."""

    def __init__(
        self, recipe: PipelineRecipe, settings: Settings, local: Pipeline, address: str | None
    ) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray needs Ray: pip install 'llmduet[ray]'") from None
        self.name = local.name
        self._local = local
        self._recipe = recipe
        self._settings = settings
        try:
            ray.init(
                address=address,
                ignore_reinit_error=True,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = address or "a new local instance"
            raise ConfigError(f"cannot start or reach Ray at {where}: {exc}") from None
        self._task = ray.remote(num_cpus=1)(run_case)

    def identity(self) -> dict[str, Any]:
        return self._local.identity()

    async def run(self, case: EvalCase, model: str) -> PipelineOutput:
        output = await self._task.remote(self._settings, self._recipe, case, model)
        if isinstance(output, str):
            raise BackendError(output)
        return output
