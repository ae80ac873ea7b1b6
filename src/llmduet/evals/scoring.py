"""Scoring finished answers: which metrics apply to a case, and their values on [0, 1].

A case's own ``metrics`` list wins; otherwise the run's ``--metric`` flags; otherwise a
default from what the case carries (a reference: exact match, token F1 and semantic
similarity; gold sources on a RAG run: retrieval recall and MRR). Every metric name and
its parameters are checked before any model is called, so a typo costs nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Callable
from typing import Any

from llmduet.errors import ConfigError
from llmduet.evals.cache import ResultCache, cache_key
from llmduet.evals.dataset import EvalCase
from llmduet.evals.metrics import deterministic
from llmduet.evals.metrics import rag as rag_metrics
from llmduet.evals.metrics.judge import DEFAULT_RUBRIC, judge
from llmduet.evals.metrics.pairwise import compare
from llmduet.evals.metrics.semantic import similarities
from llmduet.models.base import ChatBackend

REFERENCE_METRICS = {"exact_match", "token_f1", "semantic_similarity"}
RETRIEVAL_METRICS = {"retrieval_recall", "retrieval_mrr"}
JUDGED_METRICS = {"judge", *rag_metrics.RAG_METRICS}
METRICS = {
    *deterministic.DETERMINISTIC,
    "semantic_similarity",
    *JUDGED_METRICS,
    *RETRIEVAL_METRICS,
}
REQUIRED_PARAMETERS = {"contains": "needle", "regex": "pattern"}


def parse_metric_flag(flag: str) -> dict[str, Any]:
    """``--metric contains=needle`` / ``--metric regex=^\\d+$`` / ``--metric judge``."""
    name, _, value = flag.partition("=")
    spec: dict[str, Any] = {"name": name.strip()}
    if value:
        parameter = REQUIRED_PARAMETERS.get(spec["name"], "rubric")
        spec[parameter] = value
    return spec


def check_spec(spec: dict[str, Any], where: str, have_judge: bool) -> None:
    name = spec.get("name")
    if name not in METRICS:
        raise ConfigError(
            f"{where}: unknown metric '{name}': choose from {', '.join(sorted(METRICS))}"
        )
    needed = REQUIRED_PARAMETERS.get(str(name))
    if needed and not spec.get(needed):
        raise ConfigError(f"{where}: metric '{name}' needs '{needed}'")
    needle = spec.get("needle")
    if name == "contains" and not (
        isinstance(needle, str)
        or (isinstance(needle, list) and needle and all(isinstance(n, str) for n in needle))
    ):
        raise ConfigError(f"{where}: 'needle' must be a string or a list of strings")
    if name == "regex" and not isinstance(spec["pattern"], str):
        raise ConfigError(f"{where}: 'pattern' must be a string")
    if name == "judge" and not isinstance(spec.get("rubric", ""), str):
        raise ConfigError(f"{where}: 'rubric' must be a string")
    if name == "json_valid" and not isinstance(spec.get("schema", {}), dict | bool):
        raise ConfigError(f"{where}: 'schema' must be a JSON schema object")
    if name == "regex":
        try:
            re.compile(spec["pattern"])
        except re.error as exc:
            raise ConfigError(f"{where}: bad regex {spec['pattern']!r}: {exc}") from None
    if name == "json_valid" and spec.get("schema") is not None:
        try:
            deterministic.json_valid("null", spec["schema"])
        except ValueError as exc:
            raise ConfigError(f"{where}: unusable JSON schema: {exc}") from None
    if name in JUDGED_METRICS and not have_judge:
        raise ConfigError(f"{where}: the '{name}' metric needs a judge model: add --judge MODEL")


def specs_for(
    case: EvalCase, defaults: list[dict[str, Any]], rag: bool, judged: bool = False
) -> list[dict[str, Any]]:
    """A RAG run with a judge also gets the RAGAS metrics by default."""
    if case.metrics:
        return case.metrics
    if defaults:
        return defaults
    specs = [{"name": name} for name in sorted(REFERENCE_METRICS)] if case.references else []
    if rag and case.sources:
        specs += [{"name": name} for name in sorted(RETRIEVAL_METRICS)]
    if rag and judged:
        specs += [{"name": name} for name in rag_metrics.RAG_METRICS]
    return specs


def label(spec: dict[str, Any]) -> str:
    return str(spec["name"])


def retrieval_scores(retrieved: list[str], gold: list[str]) -> dict[str, float]:
    wanted = set(gold)
    first = next((rank for rank, source in enumerate(retrieved, 1) if source in wanted), None)
    return {
        "retrieval_recall": len(wanted & set(retrieved)) / len(wanted),
        "retrieval_mrr": 1.0 / first if first else 0.0,
    }


def deterministic_score(spec: dict[str, Any], answer: str, case: EvalCase) -> float | None:
    name = spec["name"]
    if name == "contains":
        return deterministic.contains(answer, spec["needle"])
    if name == "regex":
        return deterministic.regex_match(answer, spec["pattern"])
    if name == "json_valid":
        return deterministic.json_valid(answer, spec.get("schema"))
    if not case.references:
        return None  # a reference metric on a case without a reference
    return float(deterministic.DETERMINISTIC[name](answer, case.references))


class Scorer:
    def __init__(
        self,
        cases: list[EvalCase],
        defaults: list[dict[str, Any]],
        *,
        rag: bool,
        embedder: Callable[[], Any],
        judge_backend: ChatBackend | None,
        judge_identity: Any,
        cache: ResultCache,
        concurrency: int = 4,
    ) -> None:
        self.defaults = defaults
        self.rag = rag
        self._embedder_factory = embedder
        self._embedder: Any = None
        self.judge_backend = judge_backend
        self.judge_identity = judge_identity
        self.cache = cache
        self._judging = asyncio.Semaphore(concurrency)
        for spec in defaults:
            check_spec(spec, "--metric", judge_backend is not None)
        for case in cases:
            for spec in case.metrics:
                check_spec(spec, f"case '{case.id}'", judge_backend is not None)

    async def _verdict(self, spec: dict[str, Any], case: EvalCase, answer: str) -> dict[str, Any]:
        assert self.judge_backend is not None
        rubric = str(spec.get("rubric") or DEFAULT_RUBRIC)
        reference = "\n".join(case.references) or None
        key = cache_key("judge", self.judge_identity, rubric, case.question, reference, answer)
        cached = self.cache.get(key)
        if cached is not None:
            return dict(cached)
        async with self._judging:
            verdict = await judge(self.judge_backend, case.question, answer, reference, rubric)
        value = {"score": verdict.score, "reason": verdict.reason, "attempts": verdict.attempts}
        if verdict.score is not None:
            self.cache.put(key, value)
        return value

    async def score(self, pairs: list[tuple[EvalCase, dict[str, Any]]]) -> None:
        """Fill each record's ``metrics`` (and ``judge_reason``) in place."""
        semantic: list[tuple[dict[str, Any], str, list[str]]] = []
        verdicts: list[tuple[dict[str, Any], Any]] = []
        judged: list[tuple[dict[str, Any], str, Any]] = []
        for case, record in pairs:
            metrics: dict[str, float | None] = {}
            record["metrics"] = metrics
            if record.get("error"):
                continue
            answer = record["text"]
            for spec in specs_for(case, self.defaults, self.rag, self.judge_backend is not None):
                name = spec["name"]
                if name == "semantic_similarity":
                    if case.references:
                        semantic.append((record, answer, case.references))
                elif name == "judge":
                    verdicts.append((record, self._verdict(spec, case, answer)))
                elif name in rag_metrics.RAG_METRICS:
                    judged.append((record, name, self._rag_metric(name, case, record)))
                elif name in RETRIEVAL_METRICS:
                    if case.sources:
                        scores = retrieval_scores(
                            record.get("retrieved_sources") or [], case.sources
                        )
                        metrics[name] = scores[name]
                else:
                    metrics[label(spec)] = deterministic_score(spec, answer, case)
        if semantic:
            if self._embedder is None:
                self._embedder = await asyncio.to_thread(self._embedder_factory)
            values = await asyncio.to_thread(
                similarities,
                self._embedder,
                [a for _, a, _ in semantic],
                [r for _, _, r in semantic],
            )
            for (record, _, _), value in zip(semantic, values, strict=True):
                record["metrics"]["semantic_similarity"] = value
        results = await asyncio.gather(*(call for _, call in verdicts))
        for (record, _), verdict in zip(verdicts, results, strict=True):
            record["metrics"]["judge"] = verdict["score"]
            record["judge_reason"] = verdict["reason"]
        values = await asyncio.gather(*(call for _, _, call in judged))
        for (record, name, _), (value, problem) in zip(judged, values, strict=True):
            record["metrics"][name] = value
            if problem:
                record.setdefault("metric_errors", {})[name] = problem

    async def _embedder_ready(self) -> Any:
        if self._embedder is None:
            self._embedder = await asyncio.to_thread(self._embedder_factory)
        return self._embedder

    async def _rag_metric(
        self, name: str, case: EvalCase, record: dict[str, Any]
    ) -> tuple[float | None, str | None]:
        """One RAGAS metric for one answer (cached), and why it is missing if it is."""
        assert self.judge_backend is not None
        answer = record["text"]
        contexts = list(record.get("contexts") or case.contexts or [])
        reference = "\n".join(case.references)
        key = cache_key(name, self.judge_identity, case.question, answer, contexts, reference)
        cached = self.cache.get(key)
        if cached is not None:
            return cached["value"], None
        backend = self.judge_backend
        if name in ("context_precision", "context_recall") and not reference:
            return None, "needs a reference answer"
        if name != "answer_relevancy" and not contexts:
            return None, "needs retrieved or given contexts"
        try:
            async with self._judging:
                if name == "faithfulness":
                    value = await rag_metrics.faithfulness(backend, case.question, answer, contexts)
                elif name == "answer_relevancy":
                    embedder = await self._embedder_ready()
                    value = await rag_metrics.answer_relevancy(
                        backend, case.question, answer, lambda t: embedder.embed(t).vectors
                    )
                elif name == "context_precision":
                    value = await rag_metrics.context_precision(
                        backend, case.question, reference, contexts
                    )
                else:
                    value = await rag_metrics.context_recall(backend, reference, contexts)
        except rag_metrics.JudgeFailed as exc:
            return None, str(exc)
        self.cache.put(key, {"value": value})
        return value, None

    async def pairwise(
        self, cases: list[EvalCase], records: list[dict[str, Any]], models: list[str]
    ) -> list[dict[str, Any]]:
        """Every pair of models judged head to head on each case both answered (both
        orders; see :mod:`llmduet.evals.metrics.pairwise`)."""
        judge_backend = self.judge_backend
        if judge_backend is None:
            raise ConfigError("pairwise judging needs a judge model: add --judge MODEL")
        answers = {(r["model"], r["case_id"]): r for r in records if not r.get("error")}
        jobs = []
        for case in cases:
            for a, b in itertools.combinations(models, 2):
                if (a, case.id) in answers and (b, case.id) in answers:
                    jobs.append((case, a, b))

        async def one(case: EvalCase, a: str, b: str) -> dict[str, Any]:
            answer_a, answer_b = answers[(a, case.id)]["text"], answers[(b, case.id)]["text"]
            reference = "\n".join(case.references) or None
            key = cache_key(
                "pairwise", self.judge_identity, case.question, reference, answer_a, answer_b
            )
            verdict = self.cache.get(key)
            if verdict is None:
                async with self._judging:
                    found = await compare(
                        judge_backend, case.question, answer_a, answer_b, reference
                    )
                verdict = {
                    "outcome": found.outcome,
                    "reasons": list(found.reasons),
                    "consistent": found.consistent,
                }
                if found.outcome is not None:
                    self.cache.put(key, verdict)
            return {"case_id": case.id, "a": a, "b": b, **verdict}

        return list(await asyncio.gather(*(one(*job) for job in jobs)))
