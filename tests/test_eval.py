"""``duet eval``: datasets, the resumable runner, scoring, judges, statistics and reports."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from llmduet.config import load_settings
from llmduet.errors import BackendError, ConfigError
from llmduet.evals.cache import ResultCache
from llmduet.evals.dataset import EvalCase, load_dataset, parse_case
from llmduet.evals.metrics.judge import judge
from llmduet.evals.pipelines import ChatPipeline
from llmduet.evals.report import write_report
from llmduet.evals.runner import EvalRunner
from llmduet.evals.scoring import Scorer, parse_metric_flag
from llmduet.evals.summary import HOURS_PER_MONTH, break_even, summarise
from llmduet.models.pricing import CostModel
from llmduet.models.registry import ModelRegistry
from llmduet.testing import Reply, ScriptedBackend, ScriptedOpenAIServer

VERDICT_4 = '{"reason": "Right answer, terse.", "score": 4}'


def cases(count: int) -> list[EvalCase]:
    return [
        parse_case({"id": f"c{i}", "input": f"What is {i} + {i}?", "reference": str(2 * i)})
        for i in range(count)
    ]


def registry_with(**backends: ScriptedBackend) -> ModelRegistry:
    registry = ModelRegistry(load_settings())
    for name, backend in backends.items():
        registry.add(name, backend)
    return registry


def test_dataset_reports_bad_lines_by_number_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text(
        "\n".join(
            [
                '{"id": 1, "input": "hi", "reference": ["hello", "hi"]}',
                "{broken",
                '{"input": "no id"}',
                '{"id": "x", "messages": [{"role": "wizard", "content": "hi"}]}',
                '{"id": 1, "input": "duplicate"}',
                '{"id": "q", "question": "RAG spelling?", "answer": "yes", "sources": ["a.md"]}',
                "",
            ]
        )
    )
    data = load_dataset(path)
    assert [c.id for c in data.cases] == ["1", "q"]
    assert data.cases[0].references == ["hello", "hi"]
    assert data.cases[1].question == "RAG spelling?" and data.cases[1].sources == ["a.md"]
    assert [p.split(":")[0] for p in data.problems] == ["line 2", "line 3", "line 4", "line 5"]
    assert "missing field 'id'" in data.problems[1] and "duplicate id '1'" in data.problems[3]
    assert "role" in data.problems[2]
    with pytest.raises(ConfigError, match="not found"):
        load_dataset(tmp_path / "absent.jsonl")


async def test_runner_resumes_from_the_cache_and_records_errors(tmp_path: Path) -> None:
    first = ScriptedBackend(
        ["0", "2", Reply(error=BackendError("upstream said no")), "6"], name="first"
    )
    second = ScriptedBackend(default="7", name="second")
    registry = registry_with(a=first, b=second)
    cache = ResultCache(tmp_path / "cache.jsonl")
    runner = EvalRunner(registry, ChatPipeline(registry), ["a", "b"], cache, concurrency=1)
    result = await runner.run(cases(4))
    by_model = {(r["model"], r["case_id"]): r for r in result.records}
    assert by_model[("a", "c1")]["text"] == "2" and by_model[("b", "c3")]["text"] == "7"
    assert by_model[("a", "c2")]["error"] == "upstream said no"
    assert (
        by_model[("a", "c0")]["ttft_s"] is not None and by_model[("a", "c0")]["output_tokens"] == 1
    )
    cache.close()

    # A new run: nothing finished is asked again; the failed case is retried.
    again = ScriptedBackend(["4"], name="first")
    registry = registry_with(a=again, b=ScriptedBackend(name="second"))  # no replies: must not run
    cache = ResultCache(tmp_path / "cache.jsonl")
    rerun = await EvalRunner(registry, ChatPipeline(registry), ["a", "b"], cache).run(cases(4))
    assert rerun.cached == 7 and len(again.requests) == 1
    assert {r["case_id"]: r["text"] for r in rerun.records if r["model"] == "a"}["c2"] == "4"


async def test_an_interrupted_run_keeps_what_finished(tmp_path: Path) -> None:
    slow = Reply(chunks=["late"], first_delay_s=30)
    backend = ScriptedBackend(["0", "2", "4", slow], name="m")
    registry = registry_with(m=backend)
    cache = ResultCache(tmp_path / "cache.jsonl")
    runner = EvalRunner(registry, ChatPipeline(registry), ["m"], cache, concurrency=4)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(runner.run(cases(4)), timeout=1.0)
    cache.close()
    resumed_backend = ScriptedBackend(["6"], name="m")
    registry = registry_with(m=resumed_backend)
    cache = ResultCache(tmp_path / "cache.jsonl")
    resumed = await EvalRunner(registry, ChatPipeline(registry), ["m"], cache).run(cases(4))
    assert resumed.cached == 3 and len(resumed_backend.requests) == 1
    assert sorted(r["text"] for r in resumed.records) == ["0", "2", "4", "6"]


def test_a_crash_mid_write_loses_only_the_cut_line(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    cache = ResultCache(path)
    cache.put("k1", {"text": "kept"})
    cache.close()
    with path.open("a") as file:
        file.write('{"key": "k2", "value": {"te')  # killed here
    reopened = ResultCache(path)
    assert reopened.get("k1") == {"text": "kept"} and reopened.get("k2") is None
    reopened.put("k3", 1)
    reopened.close()
    assert ResultCache(path).get("k3") == 1


async def test_scoring_metrics_and_unknown_metrics_fail_before_running(tmp_path: Path) -> None:
    case = parse_case(
        {
            "id": "x",
            "input": "Total?",
            "reference": "42",
            "metrics": [
                {"name": "exact_match"},
                {"name": "contains", "needle": ["42"]},
                {"name": "regex", "pattern": "^\\d+$"},
                {"name": "json_valid", "schema": {"type": "integer"}},
            ],
        }
    )
    cache = ResultCache(tmp_path / "c.jsonl")
    scorer = Scorer(
        [case], [], rag=False, embedder=object, judge_backend=None, judge_identity=None, cache=cache
    )
    record = {"text": "42", "error": None}
    await scorer.score([(case, record)])
    assert record["metrics"] == {
        "exact_match": 1.0,
        "contains": 1.0,
        "regex": 1.0,
        "json_valid": 1.0,
    }
    wrong = {"text": "41 or so", "error": None}
    await scorer.score([(case, wrong)])
    assert wrong["metrics"] == {
        "exact_match": 0.0,
        "contains": 0.0,
        "regex": 0.0,
        "json_valid": 0.0,
    }
    for bad, message in [
        ({"name": "bleu"}, "unknown metric 'bleu'"),
        ({"name": "regex", "pattern": "("}, "bad regex"),
        ({"name": "contains"}, "needs 'needle'"),
        ({"name": "judge"}, "needs a judge model"),
        ({"name": "json_valid", "schema": {"type": "object", "$ref": "#/x"}}, "unusable JSON"),
    ]:
        with pytest.raises(ConfigError, match=message):
            Scorer(
                [parse_case({"id": "y", "input": "q", "metrics": [bad]})],
                [],
                rag=False,
                embedder=object,
                judge_backend=None,
                judge_identity=None,
                cache=cache,
            )
    assert parse_metric_flag("contains=Paris") == {"name": "contains", "needle": "Paris"}
    assert parse_metric_flag("judge=Is it polite?") == {"name": "judge", "rubric": "Is it polite?"}


async def test_judge_retries_until_the_verdict_parses_and_never_yields_nan() -> None:
    backend = ScriptedBackend(["not json", '{"score": 9, "reason": "x"}', VERDICT_4])
    verdict = await judge(backend, "2+2?", "4", reference="4")
    assert (verdict.score, verdict.raw_score, verdict.attempts) == (0.75, 4, 3)
    sent = backend.requests[0]
    assert sent.response_format and sent.response_format["type"] == "json_schema"
    assert "Reference answer:\n4" in sent.messages[1]["content"]
    hopeless = await judge(ScriptedBackend(default="{}"), "q", "a")
    assert hopeless.score is None and "failed after 3 tries" in hopeless.reason


async def test_the_bundled_model_judges_in_valid_json(llama: object) -> None:
    verdict = await judge(llama, "What is 2 + 2?", "4", reference="4")  # type: ignore[arg-type]
    assert verdict.score is not None and 0.0 <= verdict.score <= 1.0 and verdict.attempts == 1


def test_break_even_matches_the_arithmetic() -> None:
    api = {"per_request_usd": 0.001}
    local = {"usd_per_hour": 0.5, "capacity_per_month": 1_000_000}
    analysis = break_even(api, local)
    assert analysis is not None
    machine_month = 0.5 * HOURS_PER_MONTH  # 365 USD
    assert analysis["break_even_requests_per_month"] == pytest.approx(machine_month / 0.001)
    point = next(p for p in analysis["curve"] if p["requests_per_month"] > 2_000_000)
    assert point["self_hosted_usd"] == pytest.approx(
        machine_month * -(-point["requests_per_month"] // 1_000_000)
    )
    slow = break_even(api, {"usd_per_hour": 0.5, "capacity_per_month": 1000})
    assert slow is not None and slow["break_even_requests_per_month"] is None  # never pays


def records(model: str, location: str, scores: list[float], cost: float) -> list[dict]:
    return [
        {
            "case_id": f"c{i}",
            "model": model,
            "location": location,
            "text": f"{model} answer {i} <b>",
            "error": None,
            "ttft_s": 0.1 + i / 100,
            "itl_s": [0.01, 0.02],
            "tpot_s": 0.015,
            "total_s": 0.5,
            "output_tokens": 3,
            "cost_usd": cost,
            "metrics": {"exact_match": score},
            "judge_reason": "fine" if model == "api" else None,
        }
        for i, score in enumerate(scores)
    ]


def test_summary_and_report_files(tmp_path: Path) -> None:
    rows = records("local", "local", [1, 0, 1, 0, 1, 0, 0, 0], 0.00001) + records(
        "api", "external", [1, 1, 1, 1, 1, 1, 0, 1], 0.002
    )
    summary = summarise(
        rows, ["local", "api"], {"local": "local", "api": "external"}, {"local": 0.2, "api": None}
    )
    quality = summary["models"]["api"]["quality"]["exact_match"]
    assert quality["mean"] == pytest.approx(7 / 8) and quality["low"] < 7 / 8 < quality["high"]
    (comparison,) = summary["comparisons"]
    assert comparison["mean_difference"] == pytest.approx(3 / 8 - 7 / 8)
    assert comparison["win_rate_a"] == pytest.approx((0 + 0.5 * 4) / 8)
    assert summary["models"]["local"]["latency"]["ttft_ms"]["p50"] == pytest.approx(135.0)
    (even,) = summary["break_even"]
    assert even["break_even_requests_per_month"] == pytest.approx(0.2 * HOURS_PER_MONTH / 0.002)
    paths = write_report(tmp_path / "out", summary, rows, "test run")
    loaded = json.loads(paths["summary"].read_text(), parse_constant=lambda c: pytest.fail(c))
    assert loaded["title"] == "test run" and loaded["models"]["api"]["cases"] == 8
    assert len(paths["results"].read_text().splitlines()) == 16
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 3  # quality, latency, cost vs volume
    assert "api answer 3 &lt;b&gt;" in page and "local answer 3" in page and "judge: fine" in page
    assert "| exact_match | 0.375 [" in paths["markdown"].read_text()


def test_duet_eval_and_report_cli(
    tmp_path: Path, duet_exe: str, server: ScriptedOpenAIServer
) -> None:
    (tmp_path / "duet.toml").write_text(
        "[models.served]\nprovider = 'openai'\nmodel = 'gpt-4o-mini'\n"
        f"base_url = '{server.base_url}'\nlocation = 'external'\n"
    )
    (tmp_path / "cases.jsonl").write_text(
        '{"id": "a", "input": "Capital of France?", "reference": "Paris"}\n'
        "oops\n"
        '{"id": "b", "input": "2+2?", "reference": "4", "metrics": [{"name": "exact_match"}]}\n'
    )
    server.queue("Paris", "5")

    def duet(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [duet_exe, *args],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": str(tmp_path)},
        )

    run = duet("eval", "cases.jsonl", "-m", "served", "--out", "out", "--concurrency", "1")
    assert run.returncode == 0, run.stderr
    assert "line 2: not valid JSON" in run.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {
        "results.jsonl",
        "summary.json",
        "summary.md",
        "report.html",
        "cache.jsonl",
    }
    lines = (tmp_path / "out/results.jsonl").read_text().splitlines()
    results = {json.loads(line)["case_id"]: json.loads(line) for line in lines}
    assert results["a"]["metrics"]["exact_match"] == 1.0 and results["b"]["metrics"] == {
        "exact_match": 0.0
    }
    assert results["a"]["cost_usd"] > 0  # priced from the usage the server reported
    assert len(server.requests) == 2
    again = duet("eval", "cases.jsonl", "-m", "served", "--out", "out")
    assert again.returncode == 0 and len(server.requests) == 2  # all from the cache
    report = duet("report", "out")
    assert report.returncode == 0 and "exact_match" in report.stdout and "served" in report.stdout
    for args, message in [
        (("eval", "cases.jsonl", "-m", "served", "--metric", "bleu"), "unknown metric 'bleu'"),
        (("eval", "cases.jsonl", "-m", "nobody"), "unknown model 'nobody'"),
        (("eval", "missing.jsonl"), "missing.jsonl not found"),
        (("eval", "cases.jsonl", "--pipeline", "rag"), "needs --index"),
        (("eval", "cases.jsonl", "--pipeline", "nowhere:make"), "cannot import nowhere"),
        (("report", "empty"), "no evaluation at empty"),
    ]:
        bad = duet(*args)
        assert bad.returncode == 1, bad.stderr
        assert message in bad.stderr and "Traceback" not in bad.stderr
    assert len(server.requests) == 2  # no bad invocation reached a model


def test_cost_model_prices_self_hosted_time() -> None:
    assert CostModel(usd_per_hour=3.6).cost(0, 0, 10.0) == pytest.approx(0.01)


async def test_pairwise_swaps_positions_and_cancels_order_bias() -> None:
    from llmduet.evals.metrics.pairwise import compare

    fair = ScriptedBackend(
        ['{"reason": "first is right", "winner": "A"}', '{"reason": "now second", "winner": "B"}']
    )
    verdict = await compare(fair, "2+2?", "4", "5", reference="4")
    assert (verdict.outcome, verdict.consistent) == (1.0, True)
    straight, swapped = (r.messages[1]["content"] for r in fair.requests)
    assert "Answer A:\n4\n\nAnswer B:\n5" in straight and "Answer A:\n5\n\nAnswer B:\n4" in swapped
    biased = ScriptedBackend(default='{"reason": "always the first", "winner": "A"}')
    split = await compare(biased, "2+2?", "4", "5")
    assert (split.outcome, split.consistent) == (0.5, False)  # order bias becomes a tie
    retried = ScriptedBackend(
        ["nope", '{"winner": "B", "reason": "x"}', '{"winner": "A", "reason": "y"}']
    )
    assert (await compare(retried, "q", "a", "b")).outcome == 0.0
    assert (await compare(ScriptedBackend(default="{}"), "q", "a", "b")).outcome is None


async def test_pairwise_scoring_and_bradley_terry(tmp_path: Path) -> None:
    from llmduet.evals.summary import pairwise_summary

    judge_backend = ScriptedBackend(default='{"reason": "first", "winner": "A"}')
    cache = ResultCache(tmp_path / "c.jsonl")
    items = cases(3)
    scorer = Scorer(
        items,
        [],
        rag=False,
        embedder=object,
        judge_backend=judge_backend,
        judge_identity="j",
        cache=cache,
    )
    records = [
        {"case_id": c.id, "model": m, "text": f"{m} says", "error": None}
        for c in items
        for m in ("x", "y")
    ]
    records[0]["error"] = "failed"  # x on c0: no head to head for that case
    verdicts = await scorer.pairwise(items, records, ["x", "y"])
    assert [(v["case_id"], v["outcome"]) for v in verdicts] == [("c1", 0.5), ("c2", 0.5)]
    assert len(judge_backend.requests) == 4
    assert await scorer.pairwise(items, records, ["x", "y"]) == verdicts  # from the cache
    assert len(judge_backend.requests) == 4
    strong = [{"a": "big", "b": "small", "outcome": 1.0, "consistent": True}] * 8 + [
        {"a": "big", "b": "small", "outcome": 0.0, "consistent": True},
        {"a": "big", "b": "small", "outcome": None, "consistent": False},
    ]
    summary = pairwise_summary(strong)
    (pair,) = summary["pairs"]
    assert pair["win_rate_a"]["mean"] == pytest.approx(8 / 9) and summary["unjudged"] == 1
    scores = summary["bradley_terry"]
    assert scores["big"]["mean"] > 1000 > scores["small"]["mean"]


def test_duet_eval_pairwise_cli(
    tmp_path: Path, duet_exe: str, server: ScriptedOpenAIServer
) -> None:
    server.default = Reply(chunks=['{"reason": "A is fine", "winner": "A"}'])
    (tmp_path / "duet.toml").write_text(
        "".join(
            f"[models.{name}]\nprovider = 'openai'\nmodel = 'm-{name}'\n"
            f"base_url = '{server.base_url}'\n"
            for name in ("one", "two", "referee")
        )
    )
    (tmp_path / "cases.jsonl").write_text(
        "".join(f'{{"id": "c{i}", "input": "q{i}", "reference": "r"}}\n' for i in range(3))
    )
    command = [duet_exe, "eval", "cases.jsonl", "-m", "one", "-m", "two", "--out", "out"]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *extra],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": str(tmp_path)},
        )

    refused = run("--pairwise")
    assert refused.returncode == 1 and "--pairwise needs a judge model" in refused.stderr
    done = run("--pairwise", "--judge", "referee")
    assert done.returncode == 0, done.stderr
    verdicts = [json.loads(line) for line in (tmp_path / "out/pairwise.jsonl").open()]
    assert len(verdicts) == 3 and {v["outcome"] for v in verdicts} == {0.5}  # "A" both ways
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert set(summary["pairwise"]["bradley_terry"]) == {"one", "two"}
    assert "head to head one vs two" in done.stdout
    assert "Head to head" in (tmp_path / "out/report.html").read_text()
    judged = [r for r in server.requests if r["model"] == "m-referee"]
    assert len(judged) == 6  # 3 cases x both orders


async def test_ragas_metrics_follow_their_definitions() -> None:
    from llmduet.evals.metrics import rag

    backend = ScriptedBackend(
        ['{"statements": ["Leave is 16 weeks.", "Leave is unpaid."]}', '{"verdicts": [1, 0]}']
    )
    assert await rag.faithfulness(backend, "Leave?", "16 weeks, unpaid.", ["16 weeks paid"]) == 0.5
    schema = backend.requests[1].response_format["json_schema"]["schema"]  # type: ignore[index]
    assert (
        schema["properties"]["verdicts"]["minItems"]
        == 2
        == schema["properties"]["verdicts"]["maxItems"]
    )
    assert (
        "1. Leave is 16 weeks.\n2. Leave is unpaid." in backend.requests[1].messages[1]["content"]
    )
    ranked = ScriptedBackend(['{"verdicts": [0, 1, 1]}'])
    precision = await rag.context_precision(ranked, "q", "ref", ["x", "y", "z"])
    assert precision == pytest.approx((1 / 2 + 2 / 3) / 2)  # average precision over useful ranks
    recall = ScriptedBackend(['{"verdicts": [1, 0]}'])
    assert await rag.context_recall(recall, "It is 16 weeks. It is paid.", ["16 weeks"]) == 0.5
    assert "1. It is 16 weeks.\n2. It is paid." in recall.requests[0].messages[1]["content"]

    def embed(texts: list[str]) -> list[list[float]]:
        return [[1.0, 0.0] if "leave" in t.lower() else [0.0, 1.0] for t in texts]

    relevant = ScriptedBackend(
        [
            '{"questions": ["How long is leave?", "Is leave paid?", "What is 2+2?"], '
            '"noncommittal": 0}'
        ]
    )
    assert await rag.answer_relevancy(
        relevant, "How long is leave?", "16 weeks", embed
    ) == pytest.approx(2 / 3)
    evasive = ScriptedBackend(
        ['{"questions": ["a leave q", "b leave q", "c leave q"], "noncommittal": 1}']
    )
    assert await rag.answer_relevancy(evasive, "leave?", "I don't know", embed) == 0.0
    with pytest.raises(rag.JudgeFailed, match="after 3 tries"):
        await rag.context_recall(ScriptedBackend(default="not json"), "One. Two.", ["c"])


async def test_rag_metrics_in_scoring_are_missing_not_nan_when_the_judge_fails(
    tmp_path: Path,
) -> None:
    case = parse_case(
        {
            "id": "r",
            "input": "Leave?",
            "reference": "Sixteen weeks.",
            "contexts": ["16 weeks"],
            "metrics": [{"name": "context_recall"}, {"name": "faithfulness"}],
        }
    )
    scorer = Scorer(
        [case],
        [],
        rag=True,
        embedder=object,
        judge_backend=ScriptedBackend(default="garbage"),
        judge_identity="j",
        cache=ResultCache(tmp_path / "c.jsonl"),
    )
    record = {"text": "16 weeks", "error": None, "contexts": []}
    await scorer.score([(case, record)])
    assert record["metrics"] == {"context_recall": None, "faithfulness": None}
    assert "judge failed after 3 tries" in record["metric_errors"]["faithfulness"]
    with pytest.raises(ConfigError, match="'context_recall' metric needs a judge"):
        Scorer(
            [case],
            [],
            rag=True,
            embedder=object,
            judge_backend=None,
            judge_identity=None,
            cache=ResultCache(tmp_path / "d.jsonl"),
        )


async def test_faithfulness_on_the_bundled_model(llama: object) -> None:
    from llmduet.evals.metrics import rag

    value = await rag.faithfulness(
        llama,  # type: ignore[arg-type]
        "How long is parental leave?",
        "Parental leave is sixteen weeks at full pay.",
        ["Parental leave is sixteen weeks at full pay for every employee."],
    )
    assert value is not None and 0.0 <= value <= 1.0


def test_a_users_own_chain_as_the_pipeline(
    tmp_path: Path, duet_exe: str, server: ScriptedOpenAIServer
) -> None:
    (tmp_path / "duet.toml").write_text(
        f"[models.served]\nprovider = 'openai'\nmodel = 'm'\nbase_url = '{server.base_url}'\n"
    )
    (tmp_path / "mychain.py").write_text(
        "from langchain_core.prompts import ChatPromptTemplate\n"
        "from langchain_core.output_parsers import StrOutputParser\n\n"
        "def build(model):\n"
        "    messages = [('system', 'Be brief.'), ('human', '{q}')]\n"
        "    prompt = ChatPromptTemplate.from_messages(messages)\n"
        "    return {'q': lambda question: question.upper()} | prompt | model | StrOutputParser()\n"
    )
    (tmp_path / "cases.jsonl").write_text('{"id": "1", "input": "ping", "reference": "pong"}\n')
    server.queue("pong")
    proc = subprocess.run(
        [duet_exe, "eval", "cases.jsonl", "--pipeline", "mychain:build", "-m", "served",
         "--out", "out", "--metric", "exact_match"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (row,) = [json.loads(line) for line in (tmp_path / "out/results.jsonl").open()]
    assert row["text"] == "pong" and row["metrics"] == {"exact_match": 1.0}
    assert row["total_s"] > 0
    assert server.requests[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "PING"},
    ]


async def test_any_failure_in_a_case_is_that_cases_error_and_cached_costs_use_todays_price(
    tmp_path: Path,
) -> None:
    from llmduet.evals.pipelines import CustomPipeline

    class Flaky:
        name = "flaky"

        def identity(self) -> dict[str, str]:
            return {"pipeline": "flaky"}

        async def run(self, case: EvalCase, model: str):  # type: ignore[no-untyped-def]
            if case.id == "c1":
                raise KeyError("missing")
            return await ChatPipeline(registry).run(case, model)

    registry = registry_with(
        m=ScriptedBackend(default="ok", name="m", cost_model=CostModel(usd_per_hour=3.6))
    )
    cache = ResultCache(tmp_path / "c.jsonl")
    result = await EvalRunner(registry, Flaky(), ["m"], cache, concurrency=2).run(cases(3))
    errors = {r["case_id"]: r["error"] for r in result.records}
    assert errors == {"c0": None, "c1": "KeyError: 'missing'", "c2": None}
    first_cost = next(r["cost_usd"] for r in result.records if r["case_id"] == "c0")
    registry = registry_with(m=ScriptedBackend(name="m", cost_model=CostModel(usd_per_hour=36.0)))
    again = await EvalRunner(registry, Flaky(), ["m"], cache).run([cases(3)[0]])
    assert again.records[0]["cached"]
    assert again.records[0]["cost_usd"] == pytest.approx(10 * first_cost)

    def build(model: object):  # type: ignore[no-untyped-def]
        def blocking(question: str) -> str:  # calls the model the blocking way
            return str(model.invoke(question).content)  # type: ignore[attr-defined]

        return blocking

    import sys
    import types

    module = types.ModuleType("duet_test_chains")
    module.build = build  # type: ignore[attr-defined]
    sys.modules["duet_test_chains"] = module
    registry = registry_with(m=ScriptedBackend(default="from a blocking chain"))
    custom = CustomPipeline(registry, "duet_test_chains:build")
    output = await custom.run(cases(1)[0], "m")
    assert output.text == "from a blocking chain" and output.total_s is not None


def test_metric_parameters_are_checked_before_running(tmp_path: Path) -> None:
    for bad, message in [
        ({"name": "contains", "needle": [42]}, "'needle' must be a string"),
        ({"name": "regex", "pattern": 5}, "'pattern' must be a string"),
        ({"name": "json_valid", "schema": "object"}, "'schema' must be a JSON schema"),
    ]:
        with pytest.raises(ConfigError, match=message):
            Scorer([parse_case({"id": "y", "input": "q", "metrics": [bad]})], [], rag=False,
                   embedder=object, judge_backend=None, judge_identity=None,
                   cache=ResultCache(tmp_path / "c.jsonl"))  # fmt: skip
    assert parse_case({"id": 1, "input": "6*7?", "reference": 42}).references == ["42"]
