"""Evaluation harness: overhead per case, and throughput against concurrency.

Overhead: the same cases through ``EvalRunner`` (cache writes with fsync, records, scoring
with exact match) against calling the backend directly in a loop, on the scripted backend
with no delay, so all that remains is the harness. Goal: <= 5 ms per case.

Throughput: the scripted backend answers after a fixed delay (a stand-in for a model's
latency); cases per second at concurrency 1 ... 32 against the linear ideal
``concurrency / delay``. Goal: near-linear to 32.

    python benchmarks/eval_harness.py [--cases 400] [--delay-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from llmduet.config import load_settings
from llmduet.evals.cache import ResultCache
from llmduet.evals.dataset import EvalCase, parse_case
from llmduet.evals.pipelines import ChatPipeline
from llmduet.evals.runner import EvalRunner
from llmduet.evals.scoring import Scorer
from llmduet.models.registry import ModelRegistry
from llmduet.models.types import ChatRequest
from llmduet.testing import Reply, ScriptedBackend


def make_cases(count: int) -> list[EvalCase]:
    return [
        parse_case({"id": i, "input": f"What is {i} + 1?", "reference": str(i + 1)})
        for i in range(count)
    ]


async def harness_seconds(
    cases: list[EvalCase], backend: ScriptedBackend, concurrency: int
) -> float:
    registry = ModelRegistry(load_settings())
    registry.add("m", backend)
    cache = ResultCache(Path(tempfile.mkdtemp(prefix="duet-eval-bench-")) / "cache.jsonl")
    runner = EvalRunner(registry, ChatPipeline(registry), ["m"], cache, concurrency=concurrency)
    scorer = Scorer(
        cases,
        [{"name": "exact_match"}],
        rag=False,
        embedder=object,
        judge_backend=None,
        judge_identity=None,
        cache=cache,
    )
    by_id = {case.id: case for case in cases}
    started = time.perf_counter()
    result = await runner.run(cases)
    await scorer.score([(by_id[r["case_id"]], r) for r in result.records])
    elapsed = time.perf_counter() - started
    cache.close()
    assert len(result.records) == len(cases) and not any(r["error"] for r in result.records)
    return elapsed


async def direct_seconds(cases: list[EvalCase], backend: ScriptedBackend) -> float:
    started = time.perf_counter()
    for case in cases:
        await backend.complete(ChatRequest(messages=case.messages))
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=400)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/eval_harness.json")
    args = parser.parse_args()
    cases = make_cases(args.cases)
    instant = Reply.text("forty two")
    overheads = []
    for _ in range(args.rounds):  # alternate, so machine drift hits both alike
        direct = await direct_seconds(cases, ScriptedBackend(default=instant))
        harness = await harness_seconds(cases, ScriptedBackend(default=instant), 1)
        overheads.append((harness - direct) / len(cases) * 1000)
    overhead = sorted(overheads)[len(overheads) // 2]
    print(f"harness overhead per case (median of {args.rounds}): {overhead:.3f} ms (goal <= 5 ms)")

    delayed = Reply(chunks=["forty", " two"], first_delay_s=args.delay_ms / 1000)
    sweep = []
    base = None
    print(f"{'concurrency':>11} {'cases/s':>9} {'ideal':>9} {'of ideal':>9} {'speed-up':>9}")
    for concurrency in (1, 2, 4, 8, 16, 32):
        count = min(args.cases, 40 * concurrency)
        seconds = await harness_seconds(
            make_cases(count), ScriptedBackend(default=delayed), concurrency
        )
        rate = count / seconds
        base = base or rate
        ideal = concurrency / (args.delay_ms / 1000)
        sweep.append(
            {"concurrency": concurrency, "cases": count, "cases_per_s": rate, "ideal": ideal}
        )
        print(
            f"{concurrency:>11} {rate:>9.1f} {ideal:>9.1f} {rate / ideal:>9.2f} {rate / base:>9.2f}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"overhead_ms_per_case": overheads, "sweep": sweep}, indent=1)
    )


if __name__ == "__main__":
    asyncio.run(main())
