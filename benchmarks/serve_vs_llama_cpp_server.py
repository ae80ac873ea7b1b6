"""``duet serve`` against ``python -m llama_cpp.server`` on the same model and machine.

Both servers run the bundled SmolLM2 with 2 threads and are driven by the same client
(the openai SDK, streaming, 64-token replies, temperature 0.7, a seed per request), one
server at a time. Scenarios:

* single stream: 8 requests one after another (plus raw in-process llama-cpp-python);
  all servers stay up and rounds rotate between them, so machine drift hits all alike;
* 8 concurrent streams, 32 requests: aggregate output tokens/s, TTFT p50/p95, empty or
  cut-off streams; the peer with its defaults and with ``--interrupt_requests False``;
* the same for ``duet serve --requantize q4_0`` and ``q8_0`` (opt-in conversions);
* a concurrency sweep (1, 2, 4, 8, 16) of duet serve alone, with a plot.

Output tokens are counted one way for every side: re-tokenising the streamed text.

    python benchmarks/serve_vs_llama_cpp_server.py [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import llama_cpp
import openai

from common import PROMPTS, count_tokens, messages, run_raw
from llmduet.models.llamacpp import bundled_model_path

MAX_TOKENS = 64
THREADS = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, name: str, command: list[str], port: int) -> None:
        self.name, self.command, self.port = name, command, port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> Server:
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                models = httpx.get(f"{self.base_url}/models", timeout=1).status_code
                health = httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code
                if models == 200 and health in (200, 404):  # the peer has no /health
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start")

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def peer(path: Path, interrupt: bool) -> Server:
    port = free_port()
    return Server(
        "llama_cpp.server" + ("" if interrupt else " --interrupt_requests False"),
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(path),
            "--n_threads",
            str(THREADS),
            "--n_threads_batch",
            str(THREADS),
            "--n_ctx",
            "2048",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--interrupt_requests",
            str(interrupt),
        ],
        port,
    )


def ours(requantize: str | None = None) -> Server:
    port = free_port()
    extra = ["--requantize", requantize] if requantize else []
    return Server(
        "duet serve" + (f" --requantize {requantize}" if requantize else ""),
        [
            sys.executable,
            "-m",
            "llmduet.cli.main",
            "serve",
            "--threads",
            str(THREADS),
            "--max-concurrency",
            "16",
            "--context",
            "1024",
            "--port",
            str(port),
            *extra,
        ],
        port,
    )


async def one_request(
    client: openai.AsyncOpenAI, model: str, index: int, counter: llama_cpp.Llama
) -> dict:
    started = time.perf_counter()
    first = None
    parts: list[str] = []
    finished = False
    error = None
    try:
        stream = await client.chat.completions.create(
            model=model,
            stream=True,
            max_tokens=MAX_TOKENS,
            temperature=0.7,
            seed=index,
            messages=messages(PROMPTS[index % len(PROMPTS)]),
        )
        async for chunk in stream:
            if not chunk.choices:
                continue
            content = chunk.choices[0].delta.content
            if content:
                first = first or time.perf_counter()
                parts.append(content)
            if chunk.choices[0].finish_reason:
                finished = True
    except openai.APIError as exc:
        error = str(exc)
    end = time.perf_counter()
    text = "".join(parts)
    tokens = count_tokens(counter, text) if text else 0
    return {
        "ttft": (first - started) if first else None,
        "total": end - started,
        "tokens": tokens,
        "empty": not text,
        "cut": not finished or error is not None,
        "error": error,
    }


async def run_load(
    server: Server, model: str, concurrency: int, requests: int, counter: llama_cpp.Llama
) -> dict:
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=600)
    queue = list(range(requests))
    results: list[dict] = []

    async def worker() -> None:
        while queue:
            results.append(await one_request(client, model, queue.pop(0), counter))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    await client.close()
    ttfts = sorted(r["ttft"] for r in results if r["ttft"] is not None)

    def pct(q: float) -> float | None:
        if not ttfts:
            return None
        return round(ttfts[min(len(ttfts) - 1, int(q * len(ttfts)))] * 1000, 1)

    tokens = sum(r["tokens"] for r in results)
    return {
        "server": server.name,
        "concurrency": concurrency,
        "requests": requests,
        "output_tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "ttft_ms_p50": round(statistics.median(ttfts) * 1000, 1) if ttfts else None,
        "ttft_ms_p95": pct(0.95),
        "empty_streams": sum(r["empty"] for r in results),
        "cut_off_streams": sum(r["cut"] and not r["empty"] for r in results),
        "ttfts": ttfts,
    }


def raw_single(path: Path) -> dict:
    llm = llama_cpp.Llama(
        model_path=str(path), n_ctx=2048, n_threads=THREADS, n_threads_batch=THREADS, verbose=False
    )
    runs = [run_raw(llm, prompt, index, MAX_TOKENS, 0.7) for index, prompt in enumerate(PROMPTS)]
    tokens = sum(run["tokens"] for run in runs)
    seconds = sum(run["total"] for run in runs)
    ttfts = [run["ttft"] for run in runs]
    llm.close()
    return {
        "server": "raw in-process llama-cpp-python",
        "concurrency": 1,
        "requests": len(PROMPTS),
        "output_tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1),
        "ttft_ms_p50": round(statistics.median(ttfts) * 1000, 1),
    }


def combine(runs: list[dict]) -> dict:
    """Rounds of one scenario as one row: totals, and TTFT percentiles over all requests."""
    tokens = sum(r["output_tokens"] for r in runs)
    wall = sum(r["wall_s"] for r in runs)
    ttfts = sorted(t for r in runs for t in r["ttfts"])

    def pct(q: float) -> float | None:
        return round(ttfts[min(len(ttfts) - 1, int(q * len(ttfts)))] * 1000, 1) if ttfts else None

    return {
        "server": runs[0]["server"],
        "concurrency": runs[0]["concurrency"],
        "requests": sum(r["requests"] for r in runs),
        "rounds": len(runs),
        "output_tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "tokens_per_s_by_round": [r["tokens_per_s"] for r in runs],
        "ttft_ms_p50": round(statistics.median(ttfts) * 1000, 1) if ttfts else None,
        "ttft_ms_p95": pct(0.95),
        "empty_streams": sum(r["empty_streams"] for r in runs),
        "cut_off_streams": sum(r["cut_off_streams"] for r in runs),
    }


def plot(sweep: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [row["concurrency"] for row in sweep]
    fig, left = plt.subplots(figsize=(7, 4))
    left.plot(levels, [row["tokens_per_s"] for row in sweep], "o-", color="tab:blue")
    left.set_xlabel("concurrent streams")
    left.set_ylabel("aggregate output tokens/s", color="tab:blue")
    left.set_xscale("log", base=2)
    left.set_xticks(levels, [str(level) for level in levels])
    right = left.twinx()
    right.plot(levels, [row["ttft_ms_p50"] for row in sweep], "s--", color="tab:red")
    right.set_ylabel("TTFT p50 (ms)", color="tab:red")
    left.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    left.set_title("duet serve, SmolLM2-135M Q4_1, 2 threads, 64-token replies")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--figure", default="benchmarks/figures/serve_concurrency_sweep.png")
    parser.add_argument("--skip-sweep", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OPENAI_API_KEY", "unused")
    path = bundled_model_path()
    counter = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    rows: list[dict] = []

    def show(row: dict) -> None:
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "ttfts"}), flush=True)

    show(raw_single(path))
    # All three servers stay up (idle ones use no CPU); rounds alternate between them so
    # the machine's drift hits every server alike.
    servers = [
        (ours(), "llama"),
        (peer(path, True), "smollm2"),
        (peer(path, False), "smollm2"),
        (ours("q4_0"), "llama"),
        (ours("q8_0"), "llama"),
    ]
    with contextlib.ExitStack() as stack:
        for server, model in servers:
            stack.enter_context(server)
            asyncio.run(run_load(server, model, 1, 2, counter))  # warm-up
        per_round: dict[tuple[str, int], list[dict]] = {}
        for round_index in range(args.rounds):
            shift = round_index % len(servers)
            order = servers[shift:] + servers[:shift]
            for server, model in order:
                for concurrency, requests in ((1, len(PROMPTS)), (8, 32)):
                    row = asyncio.run(run_load(server, model, concurrency, requests, counter))
                    brief = {k: v for k, v in row.items() if k != "ttfts"}
                    print(json.dumps({"round": round_index, **brief}), flush=True)
                    per_round.setdefault((server.name, concurrency), []).append(row)
        for runs in per_round.values():
            rows.append(combine(runs))
    sweep = []
    if not args.skip_sweep:
        with ours() as server:
            asyncio.run(run_load(server, "llama", 1, 2, counter))
            for level in (1, 2, 4, 8, 16):
                row = asyncio.run(run_load(server, "llama", level, max(8, 2 * level), counter))
                row["scenario"] = "sweep"
                show(row)
                sweep.append(row)
        plot(sweep, Path(args.figure))

    def find(name: str, concurrency: int) -> dict:
        return next(
            r
            for r in rows
            if r["server"] == name
            and r["concurrency"] == concurrency
            and r.get("scenario") != "sweep"
        )

    duet1, raw1 = find("duet serve", 1), rows[0]
    peer1 = find("llama_cpp.server", 1)
    duet8 = find("duet serve", 8)
    peer8 = find("llama_cpp.server --interrupt_requests False", 8)
    peer8_default = find("llama_cpp.server", 8)
    requantized = {kind: find(f"duet serve --requantize {kind}", 8) for kind in ("q4_0", "q8_0")}
    summary = {
        "single stream tokens/s vs peer": round(duet1["tokens_per_s"] / peer1["tokens_per_s"], 2),
        "single stream tokens/s vs raw in-process": round(
            duet1["tokens_per_s"] / raw1["tokens_per_s"], 2
        ),
        "8 streams aggregate tokens/s vs peer (no interrupt)": round(
            duet8["tokens_per_s"] / peer8["tokens_per_s"], 2
        ),
        "8 streams TTFT p95 ours / peer (no interrupt)": round(
            duet8["ttft_ms_p95"] / peer8["ttft_ms_p95"], 3
        ),
        **{
            f"8 streams aggregate tokens/s vs peer, --requantize {kind} (opt-in)": round(
                row["tokens_per_s"] / peer8["tokens_per_s"], 2
            )
            for kind, row in requantized.items()
        },
        "8 streams empty+cut streams: ours / peer default / peer no-interrupt": (
            f"{duet8['empty_streams'] + duet8['cut_off_streams']} / "
            f"{peer8_default['empty_streams'] + peer8_default['cut_off_streams']} / "
            f"{peer8['empty_streams'] + peer8['cut_off_streams']}"
        ),
    }
    print(json.dumps(summary, indent=2))
    (out / "serve_vs_llama_cpp_server.json").write_text(
        json.dumps({"rows": rows, "summary": summary}, indent=2)
    )


if __name__ == "__main__":
    main()
