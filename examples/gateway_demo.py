"""The hybrid gateway end to end: `duet serve` for the local model, `duet gateway` in front
of it and ChatGPT, four requests through the official openai SDK, then the audit.

Without OPENAI_API_KEY the ChatGPT upstream is unusable, so the gateway fails over to the
local model; with a key, general requests go to ChatGPT and private ones stay local.

    python examples/gateway_demo.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

HERE = Path(__file__).parent
DUET = str(Path(sys.executable).parent / "duet")
KEY = "sk-gateway-demo"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the server exited with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not become healthy in {timeout_s:.0f} s")


def main() -> None:
    serve_port, gateway_port = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="duet-gateway-demo-"))
    config = work / "gateway.toml"
    config.write_text(
        (HERE / "gateway.toml").read_text().replace("127.0.0.1:8000", f"127.0.0.1:{serve_port}")
    )
    env = {**os.environ, "GATEWAY_DEMO_KEY": KEY}
    serve = subprocess.Popen([DUET, "serve", "--port", str(serve_port), "--threads", "2"], env=env)
    gateway = subprocess.Popen(  # in the scratch folder: its audit log is .duet/audit.db there
        [DUET, "--config", str(config), "gateway", "--port", str(gateway_port)], env=env, cwd=work
    )
    try:
        wait_healthy(f"http://127.0.0.1:{serve_port}/health", serve)
        wait_healthy(f"http://127.0.0.1:{gateway_port}/health", gateway)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{gateway_port}/v1", api_key=KEY)
        requests = [
            ("general question", "Name three colours.", {}),
            ("personal data", "Write one line to jane.doe@example.com about lunch.", {}),
            ("a card number", "Is 4111 1111 1111 1111 a test card? Answer yes or no.", {}),
            ("tagged batch", "Say hello.", {"x-duet-tags": "batch"}),
        ]
        for label, prompt, headers in requests:
            raw = client.chat.completions.with_raw_response.create(
                model="assistant",
                messages=[{"role": "user", "content": prompt}],
                max_tokens=32,
                seed=7,
                extra_headers=headers,
            )
            answer = raw.parse().choices[0].message.content or ""
            where = f"{raw.headers['x-duet-target']} ({raw.headers['x-duet-location']})"
            print(f"{label:17} rule {raw.headers['x-duet-rule']:21} -> {where}: {answer[:60]!r}")
        stream = client.chat.completions.create(
            model="assistant",
            messages=[{"role": "user", "content": "Count to five."}],
            max_tokens=24,
            stream=True,
        )
        print(
            "streamed:",
            repr("".join(c.choices[0].delta.content or "" for c in stream if c.choices)),
        )
    finally:
        for proc in (gateway, serve):
            proc.terminate()
        for proc in (gateway, serve):
            proc.wait(timeout=60)
    subprocess.run([DUET, "audit"], check=True, cwd=work)


if __name__ == "__main__":
    main()
