"""``duet bench``: load-test registered models (closed-loop concurrency sweep or open-loop
Poisson arrivals), one model after another; writes ``bench.json`` and ``bench.png``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from llmduet.cli.app import app, console, err_console, fail, friendly_errors, registry

DEFAULT_OUT = Path(".duet/bench")
DEFAULT_CONCURRENCY = "1,2,4,8"
DEFAULT_DURATION_S = 30.0
MAX_CONCURRENCY = 1024
MAX_REQUESTS = 100_000
MAX_DURATION_S = 3600.0
MAX_PROMPT_TOKENS = 1_000_000
MAX_OUTPUT_TOKENS = 100_000


def _number(flag: str, value: float, *, whole: bool = False, most: float | None = None) -> None:
    kind = "whole number" if whole else "number"
    if math.isnan(value) or value <= 0:
        raise fail(f"{flag} must be a positive {kind}, got {value:g}")
    if most is not None and value > most:
        raise fail(f"{flag} is at most {most:g}, got {value:g}")


def parse_levels(flag: str, text: str, *, whole: bool, most: float) -> list[float]:
    """A comma-separated list of positive numbers (ints when ``whole``), duplicates
    dropped, order kept."""
    example = "1,2,4,8" if whole else "0.5,1,2"
    values: list[float] = []
    for part in text.split(","):
        part = part.strip()
        try:
            value: float = int(part) if whole else float(part)
        except ValueError:
            raise fail(
                f"{flag} '{text}' is not a comma-separated list of "
                f"{'whole numbers' if whole else 'numbers'} (e.g. {example})"
            ) from None
        _number(flag, value, whole=whole, most=most)
        values.append(value)
    return list(dict.fromkeys(values))


def parse_slo(text: str) -> dict[str, float]:
    """``ttft_ms=500,itl_ms=50`` -> ``{"ttft_ms": 500.0, "itl_ms": 50.0}``."""
    from llmduet.bench.load import SLO_KEYS, check_slo

    slo: dict[str, float] = {}
    for part in text.split(","):
        key, sep, raw = part.partition("=")
        key = key.strip().lower()
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not sep or not key or math.isnan(value):
            raise fail(
                f"--slo '{text}' is not KEY=MS[,KEY=MS] (e.g. ttft_ms=500,itl_ms=50; "
                f"keys: {', '.join(SLO_KEYS)})"
            )
        slo[key] = value
    try:
        return check_slo(slo)
    except ValueError as exc:
        raise fail(f"--slo: {exc}") from None


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def level_table(name: str, location: str, mode: str, rows: list[dict[str, Any]]) -> Table:
    x_label = "concurrency" if mode == "closed" else "rate req/s"
    title = f"{name} ({location}): {'closed loop' if mode == 'closed' else 'open loop, Poisson'}"
    table = Table(title=escape(title))
    columns = [
        x_label,
        "requests",
        "failed",
        "req/s",
        "out tok/s",
        "TTFT p50 ms",
        "TTFT p95 ms",
        "ITL p50 ms",
        "TPOT p50 ms",
        "E2E p50 ms",
        "E2E p99 ms",
        "goodput req/s",
    ]
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        level = row["concurrency"] if mode == "closed" else row["rate"]
        failed = f"{row['failed']} ({(row['error_rate'] or 0) * 100:.0f}%)"
        table.add_row(
            f"{level:g}",
            str(row["requests"]),
            failed,
            _fmt(row["request_throughput"], 2),
            _fmt(row["output_throughput"]),
            _fmt(row["ttft_ms"]["p50"]),
            _fmt(row["ttft_ms"]["p95"]),
            _fmt(row["itl_ms"]["p50"]),
            _fmt(row["tpot_ms"]["p50"]),
            _fmt(row["e2e_ms"]["p50"], 0),
            _fmt(row["e2e_ms"]["p99"], 0),
            _fmt(row["goodput"], 2),
        )
    return table


def write_plot(path: Path, report: dict[str, Any]) -> Path:
    """Request and output-token throughput and TTFT p50/p95 against concurrency (or rate),
    one colour per model, rendered with the Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    closed = report["mode"] == "closed"
    x_key = "concurrency" if closed else "rate"
    figure = Figure(figsize=(15, 4.5), layout="constrained")
    FigureCanvasAgg(figure)  # the Agg canvas: no display, no global pyplot state
    requests, tokens, ttft = figure.subplots(1, 3)
    for index, (name, entry) in enumerate(report["models"].items()):
        rows = entry["levels"]
        color = f"C{index % 10}"
        xs = [row[x_key] for row in rows]

        def ys(metric: str, key: str | None = None, rows: list[Any] = rows) -> list[float]:
            values = [row[metric][key] if key else row[metric] for row in rows]
            return [math.nan if value is None else value for value in values]

        requests.plot(xs, ys("request_throughput"), "o-", color=color, label=name)
        tokens.plot(xs, ys("output_throughput"), "o-", color=color, label=name)
        ttft.plot(xs, ys("ttft_ms", "p50"), "o-", color=color, label=f"{name} p50")
        ttft.plot(xs, ys("ttft_ms", "p95"), "^--", color=color, label=f"{name} p95")
    levels_x = sorted({row[x_key] for e in report["models"].values() for row in e["levels"]})
    x_label = "concurrency (requests in flight)" if closed else "offered rate (requests/s)"
    for axis, title, y_label in (
        (requests, "Request throughput", "requests/s"),
        (tokens, "Output throughput", "output tokens/s"),
        (ttft, "Time to first token (p50 solid, p95 dashed)", "TTFT ms"),
    ):
        axis.set_title(title)
        axis.set_xlabel(x_label)
        axis.set_ylabel(y_label)
        axis.grid(True, alpha=0.3)
        axis.set_ylim(bottom=0)
        if closed:
            axis.set_xscale("log", base=2)
        if levels_x:
            axis.set_xticks(levels_x, [f"{x:g}" for x in levels_x])
        axis.legend(fontsize="small")
    settings = report["settings"]
    figure.suptitle(
        f"duet bench ({'closed loop' if closed else 'open loop, Poisson arrivals'}): "
        f"prompt ~{settings['prompt_tokens']} tokens, max {settings['output_tokens']} output "
        "tokens"
    )
    figure.savefig(path, dpi=110)
    return path


@app.command("bench")
@friendly_errors
def bench_command(
    model: list[str] = typer.Option(
        None, "--model", "-m", help="model to load-test (repeat; run one after another)"
    ),
    concurrency: str | None = typer.Option(
        None,
        "--concurrency",
        help=f"closed loop: requests kept in flight, a comma list (default {DEFAULT_CONCURRENCY})",
    ),
    requests_per_level: int = typer.Option(
        32, "--requests-per-level", help="closed loop: requests at each concurrency"
    ),
    rate: str | None = typer.Option(
        None,
        "--rate",
        help="open loop: Poisson arrivals per second (a comma list sweeps several rates)",
    ),
    duration: float | None = typer.Option(
        None, "--duration", help=f"open loop: seconds of arrivals (default {DEFAULT_DURATION_S:g})"
    ),
    prompt_tokens: int = typer.Option(
        128, "--prompt-tokens", help="prompt length, approximate (the measured count is shown)"
    ),
    output_tokens: int = typer.Option(64, "--output-tokens", help="max_tokens of each request"),
    slo: str | None = typer.Option(
        None,
        "--slo",
        help="goodput thresholds in ms: ttft_ms, itl_ms (a request's mean gap), tpot_ms, "
        "e2e_ms; e.g. ttft_ms=500,itl_ms=50",
    ),
    seed: int = typer.Option(0, "--seed", help="open loop: seed of the arrival times"),
    max_in_flight: int = typer.Option(
        256, "--max-in-flight", help="open loop: cap on requests running (more are dropped)"
    ),
    max_requests: int = typer.Option(
        10_000, "--max-requests", help="open loop: cap on arrivals per rate"
    ),
    max_duration: float = typer.Option(
        300.0, "--max-duration", help="closed loop: seconds per level before it is cut short"
    ),
    drain: float = typer.Option(
        30.0, "--drain", help="open loop: seconds to wait for stragglers after the window"
    ),
    warmup: int = typer.Option(
        1, "--warmup", help="untimed requests per model before measuring (0 for none)"
    ),
    out: Path = typer.Option(DEFAULT_OUT, "--out", help="folder for bench.json and bench.png"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per model and level"),
) -> None:
    """Load-test models: throughput, TTFT/ITL/TPOT/E2E percentiles, errors and goodput."""
    import asyncio

    from llmduet.bench.load import (
        DEFAULT_MAX_REQUESTS,
        RunResult,
        closed_loop,
        make_request,
        open_loop,
        summarize,
    )

    if not model:
        raise fail("name a model to load-test: duet bench -m MODEL (see `duet models`)")
    mode = "open" if rate is not None else "closed"
    if mode == "open":
        if concurrency is not None:
            raise fail("--rate runs an open loop and --concurrency a closed one: pass one")
        levels = parse_levels("--rate", rate or "", whole=False, most=10_000)
        window = DEFAULT_DURATION_S if duration is None else duration
        _number("--duration", window, most=MAX_DURATION_S)
    else:
        if duration is not None:
            raise fail("--duration is for the open loop: pass --rate R with it")
        levels = parse_levels(
            "--concurrency", concurrency or DEFAULT_CONCURRENCY, whole=True, most=MAX_CONCURRENCY
        )
        window = None
    _number("--requests-per-level", requests_per_level, whole=True, most=MAX_REQUESTS)
    _number("--max-duration", max_duration, most=MAX_DURATION_S)
    _number("--max-in-flight", max_in_flight, whole=True, most=MAX_REQUESTS)
    _number("--max-requests", max_requests, whole=True, most=MAX_REQUESTS)
    _number("--drain", drain, most=MAX_DURATION_S)
    _number("--prompt-tokens", prompt_tokens, whole=True, most=MAX_PROMPT_TOKENS)
    _number("--output-tokens", output_tokens, whole=True, most=MAX_OUTPUT_TOKENS)
    if warmup < 0 or warmup > 100:
        raise fail(f"--warmup must be between 0 and 100, got {warmup}")
    thresholds = parse_slo(slo) if slo is not None else {}

    models = registry()
    names = list(dict.fromkeys(name.lower() for name in model))
    backends = {name: models.backend(name) for name in names}  # unknown names fail here
    for name, backend in backends.items():
        readiness = backend.readiness()
        if not readiness.ready:
            raise fail(f"model '{name}' is not ready: {readiness.reason}")

    report: dict[str, Any] = {
        "tool": "duet bench",
        "mode": mode,
        "settings": {
            "levels": levels,
            "requests_per_level": requests_per_level if mode == "closed" else None,
            "duration_s": window,
            "prompt_tokens": prompt_tokens,
            "output_tokens": output_tokens,
            "slo": thresholds or None,
            "seed": seed if mode == "open" else None,
            "warmup": warmup,
            "max_in_flight": max_in_flight if mode == "open" else None,
            "max_requests": max_requests if mode == "open" else None,
            "max_duration_s": max_duration if mode == "closed" else None,
            "drain_s": drain if mode == "open" else None,
        },
        "note": (
            "prompt length is approximate (about one token per word); prompt and output "
            "token counts are the usage each backend reported"
        ),
        "models": {},
        "skipped": {},
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None
    json_path = out / "bench.json"
    info = err_console if as_json else console

    def save() -> None:
        json_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")

    async def warm(name: str) -> str | None:
        backend = backends[name]
        reason = None
        for index in range(warmup):
            request = make_request(
                prompt_tokens, output_tokens, variant=DEFAULT_MAX_REQUESTS + index
            )
            try:
                async with asyncio.timeout(max(max_duration, drain)):
                    await backend.complete(request)
            except Exception as exc:  # the model is skipped with the reason, not a crash
                reason = str(exc) or type(exc).__name__
            else:
                return None
        return reason

    async def run_level(name: str, level: float) -> RunResult:
        backend = backends[name]
        if mode == "closed":
            return await closed_loop(
                backend,
                int(level),
                requests_per_level,
                prompt_tokens=prompt_tokens,
                output_tokens=output_tokens,
                max_duration_s=max_duration,
            )
        assert window is not None
        return await open_loop(
            backend,
            level,
            window,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            seed=seed,
            max_in_flight=max_in_flight,
            max_requests=max_requests,
            drain_s=drain,
        )

    async def run_all() -> None:
        try:
            for backend in backends.values():  # load everything before any timing starts
                await backend.prepare()
            for name in names:  # one model at a time, so they do not disturb each other
                backend = backends[name]
                failure = await warm(name)
                if failure is not None:
                    report["skipped"][name] = f"{name}: warm-up request failed: {failure}"
                    continue
                entry: dict[str, Any] = {"location": backend.location, "levels": []}
                report["models"][name] = entry
                for level in levels:
                    what = f"concurrency {level:g}" if mode == "closed" else f"rate {level:g}/s"
                    err_console.print(f"[dim]bench {escape(name)}: {what}[/]")
                    run = await run_level(name, level)
                    summary = summarize(run, thresholds)
                    entry["levels"].append(
                        {**summary, "samples": [s.to_dict() for s in run.samples]}
                    )
                    if as_json:
                        line = {"model": name, "location": backend.location, **summary}
                        print(json.dumps(line, allow_nan=False), flush=True)
                    save()
                if not as_json:
                    console.print(level_table(name, backend.location, mode, entry["levels"]))
        finally:
            await models.aclose()

    asyncio.run(run_all())
    save()
    if not report["models"]:
        raise fail("no model could be benchmarked: " + "; ".join(report["skipped"].values()))
    for reason in report["skipped"].values():
        err_console.print(f"[yellow]skipped[/] {escape(reason)}")
    png_path = write_plot(out / "bench.png", report)
    info.print(f"wrote {escape(str(json_path))} and {escape(str(png_path))}")
