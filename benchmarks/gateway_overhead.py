"""Latency the gateway adds, against a fast local upstream, with the baseline in the same run.

Three processes on this machine: a fast OpenAI-shaped upstream (aiohttp, canned replies),
``duet gateway`` in front of it (one route, PII detection on, SQLite audit log on, health
checks on), and this load generator. Open-loop (Poisson) load at a fixed rate is sent in
alternating rounds straight to the upstream and through the gateway, so drift on a noisy
machine hits both; the added latency is the difference of the percentiles. Then TTFT of
streamed requests the same way, and the requests/s one gateway process sustains with 32
requests in flight (closed loop; client and upstream share the same 2 cores, so it is a
lower bound).

    python benchmarks/gateway_overhead.py [--rate 200] [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import aiohttp

KEY = "sk-bench"
PROMPT = "Summarise the attached meeting notes in three bullet points, please."
COMPLETION = {
    "id": "chatcmpl-fast",
    "object": "chat.completion",
    "created": 1,
    "model": "fast",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Done: three bullets."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
}


def _chunk(delta: dict, finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-fast",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "fast",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


STREAM = [
    _chunk({"role": "assistant", "content": ""}),
    *(_chunk({"content": word}) for word in ["Done", ":", " three", " bullets", "."]),
    _chunk({}, "stop"),
    b'data: {"id":"chatcmpl-fast","object":"chat.completion.chunk","created":1,'
    b'"model":"fast","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":5,'
    b'"total_tokens":25}}\n\n',
    b"data: [DONE]\n\n",
]


def run_upstream(port: int) -> None:
    from aiohttp import web

    body = json.dumps(COMPLETION).encode()

    async def chat(request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        if not payload.get("stream"):
            return web.Response(body=body, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for part in STREAM:
            await response.write(part)
        await response.write_eof()
        return response

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fast", "object": "model"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(url: str, timeout_s: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not become ready")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one(session: aiohttp.ClientSession, url: str, stream: bool) -> tuple[float, float]:
    """(total seconds, seconds to the first content chunk)."""
    body = {"model": "fast", "messages": [{"role": "user", "content": PROMPT}], "stream": stream}
    headers = {"Authorization": f"Bearer {KEY}"}
    started = time.perf_counter()
    first = None
    async with session.post(url, json=body, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"{url}: {response.status} {await response.text()}")
        if stream:
            async for line in response.content:
                if first is None and b'"content":"' in line and b'"content":""' not in line:
                    first = time.perf_counter()
        else:
            await response.read()
    done = time.perf_counter()
    return done - started, (first or done) - started


async def open_loop(url: str, rate: float, count: int, stream: bool) -> list[tuple[float, float]]:
    rng = random.Random(7)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for _ in range(20):  # warm connections
            await one(session, url, stream)
        tasks = []
        start = time.perf_counter()
        due = 0.0
        for _ in range(count):
            due += rng.expovariate(rate)
            delay = start + due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, url, stream)))
        return await asyncio.gather(*tasks)


async def closed_loop(url: str, concurrency: int, seconds: float) -> float:
    done = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await one(session, url, False)
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - started)


def summary(label: str, direct: list[float], via: list[float]) -> dict:
    row = {}
    for name, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99)):
        d, g = percentile(direct, q) * 1e3, percentile(via, q) * 1e3
        row[name] = {
            "direct_ms": round(d, 3),
            "gateway_ms": round(g, 3),
            "added_ms": round(g - d, 3),
        }
        print(
            f"  {label} {name}: direct {d:7.3f} ms  via gateway {g:7.3f} ms  added {g - d:6.3f} ms"
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="duet-gw-bench-"))
    up_port, gw_port = free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{up_port}/v1"
    (work / "duet.toml").write_text(
        textwrap.dedent(
            f"""
            [gateway]
            audit_url = "{work / "audit.db"}"
            [gateway.upstreams.fast]
            base_urls = ["{upstream_url}"]
            model = "fast"
            [gateway.teams.bench]
            [gateway.keys.bench]
            key_sha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"
            team = "bench"
            [gateway.routes.fast]
            targets = ["fast"]
            """
        )
    )
    duet = str(Path(sys.executable).parent / "duet")
    procs = [
        subprocess.Popen([sys.executable, __file__, "--upstream", str(up_port)]),
        subprocess.Popen(
            [duet, "--config", str(work / "duet.toml"), "gateway", "--port", str(gw_port)],
            env={**os.environ},
        ),
    ]
    try:
        wait_ready(f"{upstream_url}/models")
        wait_ready(f"http://127.0.0.1:{gw_port}/health")
        direct_url = f"{upstream_url}/chat/completions"
        gateway_url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        per_round = args.requests // args.rounds
        results: dict = {"rate": args.rate, "requests": per_round * args.rounds}
        for stream, rate, label in ((False, args.rate, "latency"), (True, args.rate / 2, "ttft")):
            direct: list[float] = []
            via: list[float] = []
            for _ in range(args.rounds):
                for url, into in ((direct_url, direct), (gateway_url, via)):
                    pairs = asyncio.run(open_loop(url, rate, per_round, stream))
                    into += [ttft if stream else total for total, ttft in pairs]
            print(f"{label} at {rate:g} req/s, {len(direct)} requests each side:")
            results[label] = {"rate": rate, **summary(label, direct, via)}
        gateway_rps = asyncio.run(closed_loop(gateway_url, 32, 10.0))
        direct_rps = asyncio.run(closed_loop(direct_url, 32, 10.0))
        print(
            f"sustained, 32 in flight: gateway {gateway_rps:.0f} req/s; "
            f"upstream alone {direct_rps:.0f} req/s ({gateway_rps / direct_rps:.2f}x)"
        )
        results["sustained_rps"] = {"gateway": round(gateway_rps), "direct": round(direct_rps)}
        out = Path(__file__).parent / "results" / "gateway_overhead.json"
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {out}")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--upstream":
        run_upstream(int(sys.argv[2]))
    else:
        main()
