"""Closed- and open-loop load generation against any :class:`ChatBackend`, and its summary.

Every request goes through :meth:`ChatBackend.complete`, so an OpenAI-compatible endpoint
and the in-process engine are measured the same way, from the same event timestamps.

Metric definitions follow vLLM ``benchmark_serving`` (``vllm bench serve``) and NVIDIA
GenAI-Perf:

* **TTFT**: from the call to the first non-empty output chunk;
* **ITL**: the gaps between successive output chunks, pooled over all requests for the
  percentiles (vLLM); a request's SLO is judged on its own *mean* gap;
* **TPOT**: ``(E2E - TTFT) / (output tokens - 1)`` per request with at least 2 output
  tokens (what GenAI-Perf calls inter-token latency);
* **E2E**: from the call to the end of the stream;
* **request throughput**: successful requests / wall time; **output throughput**: output
  tokens of successful requests / wall time;
* **goodput**: successful requests / wall time that met *every* SLO given (vLLM
  ``--goodput``); keys are ``ttft_ms``, ``itl_ms``, ``tpot_ms`` and ``e2e_ms``.

Latency percentiles are over successful requests only; failed ones count in the error
rate. Token counts come from the :class:`~llmduet.models.types.Usage` the backend reports
(``None`` when it reported none), never from a guessed tokenizer. The prompt built by
:func:`build_prompt` is only *about* the requested length; the measured prompt tokens are
the backend's ``usage.prompt_tokens``. ``max_tokens`` caps the output; a model may stop
earlier, which the measured output tokens show.

Every run is bounded in count and in time and stops by itself: a closed loop issues at
most ``requests`` requests and ends at ``max_duration_s``; an open loop issues at most
``max_requests`` arrivals in ``duration_s``, keeps at most ``max_in_flight`` running
(an arrival beyond that is dropped and counted as failed), and waits for stragglers at
most ``drain_s`` after the arrival window. A request still running at its run's deadline
is cancelled and counted as failed. An error in a request is recorded, never raised.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from llmduet.errors import DuetError
from llmduet.evals.stats import percentiles
from llmduet.models.base import ChatBackend
from llmduet.models.types import ChatRequest, now

__all__ = [
    "PERCENTILES",
    "SLO_KEYS",
    "RunResult",
    "Sample",
    "build_prompt",
    "check_slo",
    "closed_loop",
    "make_request",
    "meets_slo",
    "open_loop",
    "poisson_arrivals",
    "summarize",
]

PERCENTILES = (50, 90, 95, 99)
SLO_KEYS = ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms")
DEFAULT_MAX_IN_FLIGHT = 256
DEFAULT_MAX_REQUESTS = 10_000
DEFAULT_MAX_DURATION_S = 300.0
DEFAULT_DRAIN_S = 30.0

RequestFactory = Callable[[int], ChatRequest]

# Common English words, one token each with their leading space in SmolLM2's tokenizer
# (checked: N words tokenize to N tokens) and mostly so in other BPE vocabularies, so N
# words are about N prompt tokens.
_WORD_TEXT = """
time year people way day man thing woman life child world school state family
student group country problem hand part place case week company system program
question work government number night point home water room mother area money story
fact month right study book eye job word business issue side kind head house service
friend father power hour game line end member law car city name president team
minute idea body information back parent face level office door health person art
war history party result change morning reason research girl moment air teacher
force education foot boy age policy music market
"""
_WORDS = tuple(_WORD_TEXT.split())
_INSTRUCTION = "Write a long story that uses the words above."


def build_prompt(tokens: int, variant: int = 0) -> str:
    """A prompt of *about* ``tokens`` tokens, the same for the same arguments.

    The length is approximate (one common word is about one token, and the model's chat
    template adds its own tokens); the exact count is the backend's reported usage.
    Different ``variant`` numbers (10,100 of them before any repeats) order the words
    differently from the first word on, so requests share no prefix a server's prefix
    cache could shortcut.
    """
    if tokens < 1:
        raise ValueError(f"prompt tokens must be at least 1, got {tokens}")
    count = max(1, tokens - len(_INSTRUCTION.split()))
    size = len(_WORDS)
    offset = (variant * 37) % size
    stride = 1 + (variant // size) % (size - 1)  # size is prime: every stride is a permutation
    words = [_WORDS[(offset + i * stride) % size] for i in range(count)]
    return f"{' '.join(words)}\n\n{_INSTRUCTION}"


def make_request(
    prompt_tokens: int, output_tokens: int, variant: int = 0, **options: Any
) -> ChatRequest:
    """A chat request with a prompt of about ``prompt_tokens`` tokens and
    ``max_tokens = output_tokens``."""
    if output_tokens < 1:
        raise ValueError(f"output tokens must be at least 1, got {output_tokens}")
    return ChatRequest.from_prompt(
        build_prompt(prompt_tokens, variant), max_tokens=output_tokens, **options
    )


@dataclass(frozen=True, slots=True)
class Sample:
    """One request of a run. Times in seconds; ``start_s`` is the offset from the run's
    start; token counts are the backend's reported usage (``None`` if it reported none)."""

    index: int
    start_s: float
    e2e_s: float
    ttft_s: float | None = None
    itl_s: tuple[float, ...] = ()
    tpot_s: float | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def mean_itl_s(self) -> float | None:
        return statistics.fmean(self.itl_s) if self.itl_s else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, milliseconds, without the per-chunk gaps (only their mean)."""
        return {
            "index": self.index,
            "start_ms": _ms(self.start_s),
            "ttft_ms": _ms(self.ttft_s),
            "mean_itl_ms": _ms(self.mean_itl_s),
            "tpot_ms": _ms(self.tpot_s),
            "e2e_ms": _ms(self.e2e_s),
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "error": self.error,
        }


@dataclass(slots=True)
class RunResult:
    """The samples of one load level and the wall time they took."""

    mode: Literal["closed", "open"]
    samples: list[Sample]
    wall_s: float
    concurrency: int | None = None
    rate: float | None = None
    duration_s: float | None = None
    seed: int | None = None
    dropped: int = 0
    timed_out: int = 0
    stopped_early: bool = False
    limits: dict[str, float] = field(default_factory=dict)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DuetError):
        return str(exc) or type(exc).__name__
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _measure(
    backend: ChatBackend,
    request: ChatRequest,
    index: int,
    run_start: float,
    deadline: float,
    out: list[Sample],
) -> None:
    """Run one request to its end or to ``deadline`` (a loop time) and append its sample to
    ``out``; never raises, except that a cancelled run is recorded and then re-raised."""
    started = now()

    def failed(error: str) -> Sample:
        return Sample(index, started - run_start, now() - started, error=error)

    timer = asyncio.timeout_at(deadline)
    try:
        async with timer:
            result = await backend.complete(request)
    except TimeoutError as exc:
        expired = "timed out: still running when the run reached its time limit"
        out.append(failed(expired if timer.expired() else _describe(exc)))
        return
    except asyncio.CancelledError:
        out.append(failed("cancelled: the run was stopped"))
        raise
    except Exception as exc:  # a failed request is data, not a crash
        out.append(failed(_describe(exc)))
        return
    usage = result.usage
    output = usage.completion_tokens if usage is not None else None
    e2e = result.total_s
    ttft = result.ttft_s
    tpot = (e2e - ttft) / (output - 1) if ttft is not None and output and output >= 2 else None
    out.append(
        Sample(
            index,
            result.started - run_start,
            e2e,
            ttft_s=ttft,
            itl_s=tuple(result.itl_s),
            tpot_s=tpot,
            prompt_tokens=usage.prompt_tokens if usage is not None else None,
            output_tokens=output,
        )
    )


def _factory(
    request_factory: RequestFactory | None, prompt_tokens: int, output_tokens: int
) -> RequestFactory:
    if request_factory is not None:
        return request_factory
    make_request(prompt_tokens, output_tokens)  # validates both before anything runs
    return lambda index: make_request(prompt_tokens, output_tokens, variant=index)


def _positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0 or math.isinf(value):
            raise ValueError(f"{name} must be a positive finite number, got {value}")


def _timed_out(samples: list[Sample]) -> int:
    return sum(1 for s in samples if s.error and s.error.startswith("timed out"))


async def closed_loop(
    backend: ChatBackend,
    concurrency: int,
    requests: int,
    *,
    prompt_tokens: int = 128,
    output_tokens: int = 64,
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
    request_factory: RequestFactory | None = None,
) -> RunResult:
    """Keep ``concurrency`` requests in flight until ``requests`` have finished.

    Each of ``concurrency`` workers sends its next request as soon as its previous one
    ends. The run stops issuing at ``max_duration_s`` and cancels what is still running
    then (counted as failed), so fewer than ``requests`` samples mean it was cut short.
    """
    _positive(concurrency=concurrency, requests=requests, max_duration_s=max_duration_s)
    build = _factory(request_factory, prompt_tokens, output_tokens)
    await backend.prepare()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_duration_s
    run_start = now()
    samples: list[Sample] = []
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while issued < requests and loop.time() < deadline:
            index = issued
            issued += 1
            await _measure(backend, build(index), index, run_start, deadline, samples)

    workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, requests))]
    await _bounded_wait(workers, deadline)
    wall = now() - run_start
    samples.sort(key=lambda sample: sample.index)
    return RunResult(
        "closed",
        samples,
        wall,
        concurrency=concurrency,
        timed_out=_timed_out(samples),
        stopped_early=len(samples) < requests,
        limits={"requests": requests, "max_duration_s": max_duration_s},
    )


def poisson_arrivals(
    rate: float, duration_s: float, seed: int = 0, max_requests: int = DEFAULT_MAX_REQUESTS
) -> list[float]:
    """Arrival offsets (seconds) of a Poisson process of ``rate`` per second in
    ``[0, duration_s)``: exponential gaps from a private RNG seeded with ``seed``, at most
    ``max_requests`` of them. The same arguments always give the same list."""
    _positive(rate=rate, duration_s=duration_s, max_requests=max_requests)
    rng = random.Random(seed)
    arrivals: list[float] = []
    t = rng.expovariate(rate)
    while t < duration_s and len(arrivals) < max_requests:
        arrivals.append(t)
        t += rng.expovariate(rate)
    return arrivals


async def open_loop(
    backend: ChatBackend,
    rate: float,
    duration_s: float,
    *,
    prompt_tokens: int = 128,
    output_tokens: int = 64,
    seed: int = 0,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    drain_s: float = DEFAULT_DRAIN_S,
    request_factory: RequestFactory | None = None,
) -> RunResult:
    """Send requests at Poisson arrival times (see :func:`poisson_arrivals`) for
    ``duration_s``, each at its own time whatever the others are doing.

    An arrival that finds ``max_in_flight`` requests running is not sent; it is recorded
    as a failed, dropped request (the client cannot offer that load). After the window,
    stragglers get at most ``drain_s``; any still running then are cancelled and failed.
    The wall time covers the whole arrival window (or up to the last arrival when
    ``max_requests`` cut it short) and the stragglers.
    """
    _positive(max_in_flight=max_in_flight, drain_s=drain_s)
    arrivals = poisson_arrivals(rate, duration_s, seed=seed, max_requests=max_requests)
    build = _factory(request_factory, prompt_tokens, output_tokens)
    await backend.prepare()
    capped = len(arrivals) >= max_requests
    window_s = arrivals[-1] if capped else duration_s
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + window_s + drain_s
    run_start = now()
    samples: list[Sample] = []
    tasks: list[asyncio.Task[None]] = []
    in_flight = 0
    dropped = 0

    async def send(index: int) -> None:
        nonlocal in_flight
        try:
            await _measure(backend, build(index), index, run_start, deadline, samples)
        finally:
            in_flight -= 1

    for index, offset in enumerate(arrivals):
        delay = start + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if in_flight >= max_in_flight:
            dropped += 1
            samples.append(
                Sample(
                    index,
                    now() - run_start,
                    0.0,
                    error=f"dropped: {max_in_flight} requests already in flight (max_in_flight)",
                )
            )
            continue
        in_flight += 1
        tasks.append(asyncio.create_task(send(index)))
    rest = start + window_s - loop.time()
    if rest > 0:
        await asyncio.sleep(rest)
    await _bounded_wait(tasks, deadline)
    wall = now() - run_start
    samples.sort(key=lambda sample: sample.index)
    return RunResult(
        "open",
        samples,
        wall,
        rate=rate,
        duration_s=duration_s,
        seed=seed,
        dropped=dropped,
        timed_out=_timed_out(samples),
        stopped_early=capped,
        limits={
            "max_requests": max_requests,
            "max_in_flight": max_in_flight,
            "drain_s": drain_s,
        },
    )


async def _bounded_wait(tasks: list[asyncio.Task[None]], deadline: float) -> None:
    """Wait for ``tasks``; each request already stops at ``deadline``, this is the backstop
    for a backend that ignores cancellation."""
    if not tasks:
        return
    loop = asyncio.get_running_loop()
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()) + 5.0)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=1.0)


def _stats_ms(values: Iterable[float | None]) -> dict[str, float | None]:
    clean = [v * 1000 for v in values if v is not None and not math.isnan(v)]
    stats: dict[str, float | None] = {"mean": round(statistics.fmean(clean), 3) if clean else None}
    for key, value in percentiles(clean, PERCENTILES).items():
        stats[key] = None if math.isnan(value) else round(value, 3)
    return stats


def check_slo(slo: Mapping[str, float]) -> dict[str, float]:
    """Validate SLO thresholds (milliseconds); raises ``ValueError`` naming the problem."""
    checked: dict[str, float] = {}
    for key, value in slo.items():
        if key not in SLO_KEYS:
            raise ValueError(f"unknown SLO '{key}': choose from {', '.join(SLO_KEYS)}")
        if not float(value) > 0 or math.isinf(float(value)):
            raise ValueError(f"SLO {key} must be a positive number of milliseconds, got {value}")
        checked[key] = float(value)
    return checked


def meets_slo(sample: Sample, slo: Mapping[str, float]) -> bool:
    """Whether a successful request met every threshold. A metric the request cannot have
    (no gap with one chunk, no TPOT under 2 tokens) does not fail it; no output fails TTFT."""
    if not sample.ok:
        return False
    measured = {
        "ttft_ms": sample.ttft_s,
        "itl_ms": sample.mean_itl_s if sample.itl_s else 0.0,
        "tpot_ms": sample.tpot_s if sample.tpot_s is not None else 0.0,
        "e2e_ms": sample.e2e_s,
    }
    for key, limit in slo.items():
        value = measured[key]
        if value is None or value * 1000 > limit:
            return False
    return True


def summarize(run: RunResult, slo: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Throughput, latency percentiles (ms), error rate and goodput of one run.

    ``slo`` maps :data:`SLO_KEYS` to thresholds in milliseconds; goodput is ``None``
    without one. Values that cannot be computed (no successful request) are ``None``.
    """
    slo = check_slo(slo or {})
    ok = [s for s in run.samples if s.ok]
    failed = len(run.samples) - len(ok)
    wall = run.wall_s
    outputs = [s.output_tokens for s in ok if s.output_tokens is not None]
    prompts = [s.prompt_tokens for s in ok if s.prompt_tokens is not None]
    output_total = sum(outputs)
    good = sum(1 for s in ok if meets_slo(s, slo)) if slo else None
    errors = Counter(s.error for s in run.samples if s.error)

    def per_second(count: float) -> float | None:
        return round(count / wall, 4) if wall > 0 else None

    return {
        "mode": run.mode,
        "concurrency": run.concurrency,
        "rate": run.rate,
        "duration_s": run.duration_s,
        "seed": run.seed,
        "requests": len(run.samples),
        "completed": len(ok),
        "failed": failed,
        "dropped": run.dropped,
        "timed_out": run.timed_out,
        "error_rate": round(failed / len(run.samples), 4) if run.samples else None,
        "stopped_early": run.stopped_early,
        "wall_s": round(wall, 4),
        "request_throughput": per_second(len(ok)),
        "output_throughput": per_second(output_total),
        "total_token_throughput": per_second(output_total + sum(prompts)),
        "prompt_tokens_mean": round(statistics.fmean(prompts), 2) if prompts else None,
        "output_tokens_mean": round(statistics.fmean(outputs), 2) if outputs else None,
        "output_tokens_total": output_total,
        "without_usage": len(ok) - len(outputs),
        "ttft_ms": _stats_ms(s.ttft_s for s in ok),
        "itl_ms": _stats_ms(gap for s in ok for gap in s.itl_s),
        "tpot_ms": _stats_ms(s.tpot_s for s in ok),
        "e2e_ms": _stats_ms(s.e2e_s for s in ok),
        "slo": slo or None,
        "slo_met": good,
        "slo_attainment": (
            round(good / len(run.samples), 4) if good is not None and run.samples else None
        ),
        "goodput": per_second(good) if good is not None else None,
        "errors": dict(errors.most_common(5)),
        "limits": run.limits,
    }
