"""``llmduet.bench.load`` against scripted backends with known delays, and ``duet bench``
against the scripted OpenAI server on 127.0.0.1."""

from __future__ import annotations

import itertools
import json
import math
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llmduet.bench.load import (
    RunResult,
    Sample,
    build_prompt,
    check_slo,
    closed_loop,
    make_request,
    meets_slo,
    open_loop,
    poisson_arrivals,
    summarize,
)
from llmduet.errors import BackendError
from llmduet.models.base import ChatBackend
from llmduet.models.llamacpp import LlamaCppBackend
from llmduet.models.registry import ModelRegistry
from llmduet.models.types import ChatEvent, ChatRequest
from llmduet.testing import Reply, ScriptedBackend, ScriptedOpenAIServer
from test_cli import assert_clean_error
from test_cli import duet as run_duet


class CountingBackend(ScriptedBackend):
    """A scripted backend that also records the most requests it ever had in flight."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.in_flight = 0
        self.peak = 0

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            async for event in super().stream(request):
                yield event
        finally:
            self.in_flight -= 1


def registered(backend: ChatBackend, name: str = "fake") -> ChatBackend:
    """Reach the fake the way every command does: through the registry."""
    models = ModelRegistry()
    models.add(name, backend)
    assert name in models.names()
    return models.backend(name)


def poisson_band(mean: float) -> tuple[float, float]:
    """Mean +- 4 standard deviations of a Poisson count: a wrong rate falls outside."""
    return mean - 4 * math.sqrt(mean), mean + 4 * math.sqrt(mean)


# --- closed loop ---------------------------------------------------------------------------


async def test_closed_loop_runs_exactly_n_requests_at_the_concurrency() -> None:
    reply = Reply(
        chunks=["a", "b", "c", "d"], completion_tokens=7, first_delay_s=0.1, chunk_delay_s=0.01
    )
    fake = CountingBackend(default=reply)
    run = await closed_loop(registered(fake), 4, 12, prompt_tokens=40, output_tokens=16)

    assert run.mode == "closed" and run.concurrency == 4 and not run.stopped_early
    assert [s.index for s in run.samples] == list(range(12))
    assert all(s.ok for s in run.samples)
    assert len(fake.requests) == 12
    assert fake.peak == 4  # kept 4 in flight, never more
    assert {r.max_tokens for r in fake.requests} == {16}

    summary = summarize(run)
    assert summary["requests"] == summary["completed"] == 12
    assert summary["failed"] == 0 and summary["error_rate"] == 0.0
    for metric in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms"):
        assert set(summary[metric]) == {"mean", "p50", "p90", "p95", "p99"}
    # Sleeps never end early, so the scripted delays are lower bounds (no upper bounds:
    # the machines are noisy).
    assert summary["ttft_ms"]["p50"] >= 95  # scripted 100 ms first delay
    assert summary["itl_ms"]["p50"] >= 9  # scripted 10 ms between chunks
    assert summary["e2e_ms"]["p50"] > summary["ttft_ms"]["p50"]
    # tokens are the reported usage (7 a reply, 5 prompt tokens), not chunks or words
    assert summary["output_tokens_total"] == 7 * 12
    assert summary["output_tokens_mean"] == 7
    assert summary["prompt_tokens_mean"] == 5
    assert summary["without_usage"] == 0
    assert summary["output_throughput"] == pytest.approx(84 / run.wall_s, rel=1e-3)
    assert summary["request_throughput"] == pytest.approx(12 / run.wall_s, rel=1e-3)
    assert summary["goodput"] is None and summary["slo_met"] is None
    sample = run.samples[0]
    assert sample.tpot_s == pytest.approx((sample.e2e_s - sample.ttft_s) / 6)  # type: ignore[operator]


async def test_each_level_keeps_exactly_its_concurrency_in_flight() -> None:
    reply = Reply(chunks=["x"], first_delay_s=0.05)
    for concurrency in (2, 4):
        fake = CountingBackend(default=reply)
        summary = summarize(await closed_loop(registered(fake), concurrency, 16))
        assert summary["completed"] == 16 and fake.peak == concurrency


async def test_errors_are_counted_never_raised() -> None:
    ok = Reply(chunks=["fine"], completion_tokens=3)
    fake = ScriptedBackend(
        [
            ok,
            Reply(error=BackendError("upstream said boom")),
            ok,
            Reply(error=RuntimeError("bug in a backend")),
            ok,
            Reply(chunks=["a", "b", "c"], break_after=1),
            ok,
            Reply(error=BackendError("upstream said boom")),
            ok,
            ok,
        ]
    )
    run = await closed_loop(registered(fake), 2, 10)
    summary = summarize(run, {"ttft_ms": 10_000})
    assert summary["requests"] == 10
    assert summary["completed"] == 6 and summary["failed"] == 4
    assert summary["error_rate"] == pytest.approx(0.4)
    assert summary["errors"]["upstream said boom"] == 2
    assert summary["errors"]["RuntimeError: bug in a backend"] == 1
    assert any("stream break" in error for error in summary["errors"])
    assert summary["slo_met"] == 6  # a failed request never counts as good
    assert summary["output_tokens_total"] == 18  # only successful requests' usage
    failed = [s for s in run.samples if not s.ok]
    assert all(s.ttft_s is None and s.output_tokens is None for s in failed)


async def test_goodput_counts_only_requests_that_meet_every_slo() -> None:
    fast = Reply(chunks=["a", "b"], first_delay_s=0.02)
    slow = Reply(chunks=["a", "b"], first_delay_s=0.5)
    fake = ScriptedBackend([fast, slow, fast, slow, fast, slow, fast, slow])
    run = await closed_loop(registered(fake), 8, 8)
    summary = summarize(run, {"ttft_ms": 250})
    assert summary["completed"] == 8
    assert summary["slo_met"] == 4
    assert summary["slo_attainment"] == 0.5
    assert summary["goodput"] == pytest.approx(4 / run.wall_s, rel=1e-3)
    assert summary["goodput"] < summary["request_throughput"]
    everything = summarize(run, {"ttft_ms": 250, "e2e_ms": 100_000})
    assert everything["slo_met"] == 4  # every SLO must hold; the loose one changes nothing
    assert summarize(run, {"ttft_ms": 5_000})["slo_met"] == 8


async def test_itl_slo_is_judged_on_each_requests_mean_gap() -> None:
    smooth = Reply(chunks=["a"] * 5, chunk_delay_s=0.005)
    choppy = Reply(chunks=["a"] * 3, chunk_delay_s=0.2)
    fake = ScriptedBackend([smooth, choppy, smooth, choppy, smooth, choppy])
    run = await closed_loop(registered(fake), 6, 6)
    summary = summarize(run, {"itl_ms": 100})
    assert summary["completed"] == 6 and summary["slo_met"] == 3


def test_meets_slo_and_check_slo_exactly() -> None:
    sample = Sample(0, 0.0, e2e_s=0.5, ttft_s=0.1, itl_s=(0.01, 0.09), tpot_s=0.02)
    assert sample.mean_itl_s == pytest.approx(0.05)
    assert meets_slo(sample, {"itl_ms": 50.0001})  # mean 50 ms although one gap is 90 ms
    assert not meets_slo(sample, {"itl_ms": 49})
    assert meets_slo(sample, {"ttft_ms": 100.0001, "e2e_ms": 500.0001, "tpot_ms": 20.0001})
    assert not meets_slo(sample, {"ttft_ms": 99})
    assert not meets_slo(sample, {"e2e_ms": 499})
    assert not meets_slo(sample, {"tpot_ms": 19})
    assert not meets_slo(Sample(1, 0.0, 0.01, error="boom"), {"e2e_ms": 1000})
    assert not meets_slo(Sample(2, 0.0, 0.01), {"ttft_ms": 1000})  # no output: no TTFT
    with pytest.raises(ValueError, match="unknown SLO 'speed'"):
        check_slo({"speed": 1})
    with pytest.raises(ValueError, match="positive"):
        check_slo({"ttft_ms": 0})
    with pytest.raises(ValueError, match="unknown SLO"):
        summarize(RunResult("closed", [], 1.0), {"latency": 5})


def test_summary_definitions_on_known_samples() -> None:
    samples = [
        Sample(0, 0.0, e2e_s=0.4, ttft_s=0.1, itl_s=(0.1, 0.2), tpot_s=0.1, output_tokens=4),
        Sample(1, 0.0, e2e_s=0.6, ttft_s=0.2, itl_s=(0.3,), tpot_s=0.2, output_tokens=3),
        Sample(
            2, 0.0, e2e_s=0.8, ttft_s=0.3, itl_s=(), prompt_tokens=10, output_tokens=1
        ),  # one token: no TPOT
        Sample(3, 0.0, e2e_s=0.1, error="boom"),
    ]
    summary = summarize(RunResult("closed", samples, wall_s=2.0, concurrency=2))
    assert summary["requests"] == 4 and summary["completed"] == 3
    assert summary["error_rate"] == 0.25
    assert summary["request_throughput"] == 1.5
    assert summary["output_throughput"] == 4.0  # (4 + 3 + 1) tokens / 2 s
    assert summary["ttft_ms"]["p50"] == pytest.approx(200)
    assert summary["ttft_ms"]["mean"] == pytest.approx(200)
    assert summary["itl_ms"]["p50"] == pytest.approx(200)  # gaps pooled: 100, 200, 300
    assert summary["tpot_ms"]["mean"] == pytest.approx(150)
    assert summary["e2e_ms"]["p99"] == pytest.approx(796, abs=0.01)  # linear: 600 + 0.98 * 200
    empty = summarize(RunResult("open", [], wall_s=1.0, rate=1.0))
    assert empty["requests"] == 0 and empty["error_rate"] is None
    assert empty["ttft_ms"] == dict.fromkeys(("mean", "p50", "p90", "p95", "p99"))
    json.dumps(empty, allow_nan=False)  # no NaN ever reaches the JSON


async def test_closed_loop_stops_at_its_time_limit() -> None:
    fake = ScriptedBackend(default=Reply(first_delay_s=60))
    run = await closed_loop(registered(fake), 2, 1000, max_duration_s=0.5)
    assert run.stopped_early and len(run.samples) == 2
    assert all(s.error and s.error.startswith("timed out") for s in run.samples)
    assert summarize(run)["timed_out"] == 2


# --- open loop -----------------------------------------------------------------------------


def test_poisson_arrivals_are_seeded_bounded_and_at_the_rate() -> None:
    arrivals = poisson_arrivals(20, 100, seed=1)
    assert arrivals == poisson_arrivals(20, 100, seed=1)
    assert arrivals != poisson_arrivals(20, 100, seed=2)
    assert arrivals == sorted(arrivals) and arrivals[0] > 0 and arrivals[-1] < 100
    low, high = poisson_band(2000)
    assert low <= len(arrivals) <= high
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 20, rel=0.1)  # exponential, mean 1/rate
    assert len(poisson_arrivals(1000, 10, max_requests=50)) == 50
    with pytest.raises(ValueError, match="rate"):
        poisson_arrivals(0, 10)


async def test_open_loop_issues_the_poisson_arrivals_at_their_own_times() -> None:
    fake = CountingBackend(default=Reply(chunks=["x", "y"], first_delay_s=0.3))
    arrivals = poisson_arrivals(20, 1.0, seed=3)
    low, high = poisson_band(20)
    assert low <= len(arrivals) <= high
    run = await open_loop(registered(fake), 20, 1.0, seed=3, drain_s=5)
    assert run.mode == "open" and run.rate == 20 and run.seed == 3
    assert len(run.samples) == len(fake.requests) == len(arrivals)
    assert all(s.ok for s in run.samples)
    assert fake.peak > 1  # requests overlapped: none waited for another to finish
    for sample, offset in zip(run.samples, arrivals, strict=True):
        assert sample.start_s >= offset - 0.005  # never sent before its arrival time
    assert run.wall_s >= 1.0  # the whole window
    summary = summarize(run)
    assert summary["completed"] == len(arrivals) and summary["dropped"] == 0
    assert 150 <= summary["ttft_ms"]["p50"] <= 450


async def test_open_loop_waits_for_stragglers_only_a_bounded_time() -> None:
    fake = ScriptedBackend(default=Reply(first_delay_s=60))
    run = await open_loop(registered(fake), 10, 0.5, seed=5, drain_s=0.3)
    assert 0.5 <= run.wall_s < 0.5 + 0.3 + 2  # stops by itself, not after 60 s
    summary = summarize(run, {"ttft_ms": 1000})
    assert summary["requests"] == len(poisson_arrivals(10, 0.5, seed=5)) > 0
    assert summary["timed_out"] == summary["failed"] == summary["requests"]
    assert summary["error_rate"] == 1.0 and summary["goodput"] == 0


async def test_open_loop_caps_requests_in_flight_and_counts_the_dropped() -> None:
    arrivals = poisson_arrivals(50, 0.4, seed=9)
    assert len(arrivals) > 3
    fake = ScriptedBackend(default=Reply(first_delay_s=60))
    run = await open_loop(registered(fake), 50, 0.4, seed=9, max_in_flight=3, drain_s=0.2)
    assert len(fake.requests) == 3  # never more than 3 sent while 3 were running
    assert run.dropped == len(arrivals) - 3
    assert len(run.samples) == len(arrivals)
    assert sum(1 for s in run.samples if s.error and s.error.startswith("dropped")) == run.dropped


async def test_open_loop_stops_at_max_requests_without_waiting_out_the_window() -> None:
    fake = ScriptedBackend(default=Reply(chunks=["x"]))
    run = await open_loop(registered(fake), 200, 600, max_requests=20, drain_s=5)
    assert len(fake.requests) == len(run.samples) == 20
    assert run.stopped_early and run.wall_s < 10


def test_prompt_is_deterministic_and_about_the_requested_length() -> None:
    prompt = build_prompt(64)
    assert prompt == build_prompt(64) and prompt != build_prompt(64, variant=1)
    assert len(prompt.split()) == 64
    assert len(build_prompt(2000).split()) == 2000
    request = make_request(32, 12, variant=3)
    assert request.max_tokens == 12
    assert request.messages == [{"role": "user", "content": build_prompt(32, 3)}]
    with pytest.raises(ValueError):
        build_prompt(0)
    with pytest.raises(ValueError):
        make_request(10, 0)


@pytest.mark.model
async def test_the_in_process_engine_is_benchmarked_the_same_way(llama: LlamaCppBackend) -> None:
    run = await closed_loop(llama, 2, 2, prompt_tokens=16, output_tokens=4)
    summary = summarize(run)
    assert summary["completed"] == 2, summary["errors"]
    assert summary["prompt_tokens_mean"] >= 16  # measured: the words plus the chat template
    assert 1 <= summary["output_tokens_mean"] <= 4
    assert summary["ttft_ms"]["p50"] is not None


# --- duet bench ----------------------------------------------------------------------------


def duet(exe: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_duet(exe, *args, env={"COLUMNS": "200"})  # wide: the tables have many columns


@pytest.fixture
def served(server: ScriptedOpenAIServer, tmp_path: Path) -> ScriptedOpenAIServer:
    (tmp_path / "duet.toml").write_text(
        f"""
[models.served]
provider = "openai"
model = "smollm2"
base_url = "{server.base_url}"

[models.keyless]
provider = "openai"
model = "gpt-4o-mini"

[models.down]
provider = "openai"
model = "smollm2"
base_url = "http://127.0.0.1:{closed_port()}/v1"
"""
    )
    return server


def closed_port() -> int:
    """A 127.0.0.1 port that was free a moment ago: nothing listens on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_bench_cli_sweeps_concurrency_and_writes_json_and_plot(
    duet_exe: str, served: ScriptedOpenAIServer, tmp_path: Path
) -> None:
    served.default = Reply(
        chunks=["one", " two", " three"], prompt_tokens=21, completion_tokens=9, first_delay_s=0.02
    )
    proc = duet(
        duet_exe,
        "bench",
        "-m",
        "served",
        "--concurrency",
        "1,2",
        "--requests-per-level",
        "4",
        "--prompt-tokens",
        "24",
        "--output-tokens",
        "8",
        "--slo",
        "ttft_ms=5000,e2e_ms=10000",
        "--out",
        "out",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert [(row["model"], row["concurrency"]) for row in lines] == [("served", 1), ("served", 2)]
    for row in lines:
        assert row["mode"] == "closed"
        assert row["completed"] == row["requests"] == 4 and row["failed"] == 0
        assert row["output_tokens_mean"] == 9  # the usage the server reported, not 3 chunks
        assert row["prompt_tokens_mean"] == 21
        assert row["slo_met"] == 4 and row["goodput"] > 0
        assert row["ttft_ms"]["p50"] >= 10  # the scripted 20 ms before the stream starts
        assert set(row["e2e_ms"]) == {"mean", "p50", "p90", "p95", "p99"}
    report = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert report["mode"] == "closed" and report["settings"]["slo"] == {
        "ttft_ms": 5000,
        "e2e_ms": 10000,
    }
    levels = report["models"]["served"]["levels"]
    assert [level["concurrency"] for level in levels] == [1, 2]
    assert all(len(level["samples"]) == 4 for level in levels)
    assert (tmp_path / "out" / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    chats = [body for body in served.requests if "messages" in body]
    assert len(chats) == 1 + 8  # one untimed warm-up, then 4 per level
    assert all(body["max_tokens"] == 8 and body["stream"] for body in chats)
    assert all(len(body["messages"][-1]["content"].split()) == 24 for body in chats)


def test_bench_cli_open_loop_prints_a_table(
    duet_exe: str, served: ScriptedOpenAIServer, tmp_path: Path
) -> None:
    proc = duet(
        duet_exe, "bench", "-m", "served", "--rate", "20", "--duration", "0.5", "--out", "open"
    )
    assert proc.returncode == 0, proc.stderr
    assert "open loop" in proc.stdout and "req/s" in proc.stdout and "TTFT p50" in proc.stdout
    report = json.loads((tmp_path / "open" / "bench.json").read_text())
    (level,) = report["models"]["served"]["levels"]
    assert report["mode"] == "open" and level["rate"] == 20
    assert level["requests"] == len(poisson_arrivals(20, 0.5, seed=0))
    assert level["failed"] == 0
    assert (tmp_path / "open" / "bench.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--concurrency", "1,x"], ["--concurrency '1,x' is not a comma-separated list"]),
        (["--concurrency", "2,0"], ["--concurrency must be a positive whole number"]),
        (["--requests-per-level", "0"], ["--requests-per-level must be a positive"]),
        (["--rate", "0"], ["--rate must be a positive number"]),
        (["--rate", "2", "--duration", "-1"], ["--duration must be a positive number"]),
        (["--rate", "2", "--concurrency", "4"], ["pass one"]),
        (["--output-tokens", "0"], ["--output-tokens must be a positive"]),
        (["--slo", "ttft_ms"], ["is not KEY=MS"]),
        (["--slo", "ttft_ms=fast"], ["is not KEY=MS"]),
        (["--slo", "speed_ms=5"], ["unknown SLO 'speed_ms'", "ttft_ms"]),
        (["--slo", "ttft_ms=-5"], ["SLO ttft_ms must be a positive"]),
        (["-m", "nosuch"], ["unknown model 'nosuch'"]),
        (["-m", "keyless"], ["model 'keyless' is not ready: missing key"]),
        (["-m", "down"], ["model 'down' is not ready: endpoint unreachable"]),
    ],
)
def test_bench_cli_bad_input_is_one_line(
    duet_exe: str, served: ScriptedOpenAIServer, args: list[str], fragments: list[str]
) -> None:
    model = [] if "-m" in args else ["-m", "served"]
    assert_clean_error(duet(duet_exe, "bench", *model, *args, "--out", "x"), *fragments)
    assert not [body for body in served.requests if "messages" in body]  # nothing was sent


def test_bench_cli_needs_a_model(duet_exe: str) -> None:
    assert_clean_error(duet(duet_exe, "bench"), "name a model")
