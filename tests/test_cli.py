"""The installed ``duet`` command, run as a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from llmduet.testing import ScriptedOpenAIServer


def duet(
    exe: str,
    *args: str,
    stdin: str | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY" and not k.startswith("DUET_")
    }
    environment.update({"COLUMNS": "160", **(env or {})})
    return subprocess.run(
        [exe, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd or Path.cwd(),
        env=environment,
    )


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_clean_error(
    proc: subprocess.CompletedProcess[str], *fragments: str, code: int = 1
) -> None:
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # one line, no panel
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


@pytest.fixture
def served(server: ScriptedOpenAIServer, tmp_path: Path) -> ScriptedOpenAIServer:
    (tmp_path / "duet.toml").write_text(
        f"""
[models.served]
provider = "openai"
model = "smollm2"
base_url = "{server.base_url}"

[models.tiny]
provider = "llamacpp"
n_ctx = 64
threads = 2

[models.broken]
provider = "llamacpp"
path = "missing.gguf"
"""
    )
    return server


def test_models_lists_readiness(duet_exe: str, served: ScriptedOpenAIServer) -> None:
    proc = duet(duet_exe, "models", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json_lines(proc.stdout)}
    assert rows["llama"]["ready"] is True and rows["llama"]["location"] == "local"
    assert rows["chatgpt"]["ready"] is False
    assert rows["chatgpt"]["status"] == "missing key: set OPENAI_API_KEY in the environment"
    assert rows["served"]["ready"] is True and rows["served"]["location"] == "local"
    assert "not found" in rows["broken"]["status"]
    table = duet(duet_exe, "models")
    assert table.returncode == 0 and "missing key" in table.stdout


@pytest.mark.model
def test_ask_json_runs_models_side_by_side_and_skips_the_unready(
    duet_exe: str, served: ScriptedOpenAIServer
) -> None:
    served.queue("Hello from the endpoint.")
    proc = duet(
        duet_exe,
        "ask",
        "Say hello.",
        "-m",
        "llama",
        "-m",
        "served",
        "-m",
        "chatgpt",
        "--json",
        "--max-tokens",
        "8",
        "--seed",
        "1",
        "--temperature",
        "0.2",
        "--system",
        "Be brief.",
    )
    assert proc.returncode == 0, proc.stderr
    rows = {row["model"]: row for row in json_lines(proc.stdout)}
    assert list(rows) == ["llama", "served", "chatgpt"]
    fields = {
        "model",
        "text",
        "ttft_ms",
        "tokens_per_s",
        "output_tokens",
        "total_ms",
        "cost_usd",
        "location",
        "error",
    }
    assert all(fields <= set(row) for row in rows.values())
    llama = rows["llama"]
    assert llama["error"] is None and llama["text"]
    assert 1 <= llama["output_tokens"] <= 8
    assert llama["ttft_ms"] > 0 and llama["cost_usd"] > 0 and llama["location"] == "local"
    assert rows["served"]["text"] == "Hello from the endpoint."
    assert rows["chatgpt"]["error"] == "missing key: set OPENAI_API_KEY in the environment"
    assert rows["chatgpt"]["skipped"] is True
    sent = served.requests[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["max_tokens"] == 8 and sent["seed"] == 1 and sent["temperature"] == 0.2


def test_ask_renders_panes_and_a_table(duet_exe: str, served: ScriptedOpenAIServer) -> None:
    served.queue("A pane of text.")
    proc = duet(duet_exe, "ask", "hi", "-m", "served")
    assert proc.returncode == 0, proc.stderr
    for fragment in ("A pane of text.", "TTFT ms", "tokens/s", "cost USD", "served"):
        assert fragment in proc.stdout


@pytest.mark.parametrize(
    ("args", "fragments", "code"),
    [
        (["ask", "hi", "-m", "nope"], ["unknown model 'nope'", "under [models.NAME] in"], 1),
        (["ask", "hi", "-m", "chatgpt"], ["no model produced an answer", "set OPENAI_API_KEY"], 1),
        (["ask", "hi", "-m", "broken"], ["missing.gguf not found"], 1),
        (["ask", "word " * 100, "-m", "tiny"], ["context window is 64"], 1),
        (["ask", "hi", "--temperature", "5"], ["error: Invalid value for '--temperature'"], 2),
        (["ask", "hi", "--max-tokens", "0"], ["--max-tokens", "see 'duet ask --help'"], 2),
        (["ask", "hi", "--bogus"], ["No such option: --bogus"], 2),
        (["ask", "   "], ["the prompt is empty"], 1),
        (["--config", "absent.toml", "models"], ["absent.toml not found"], 1),
    ],
)
def test_errors_are_one_line_with_non_zero_exit(
    duet_exe: str, served: ScriptedOpenAIServer, args: list[str], fragments: list[str], code: int
) -> None:
    assert_clean_error(duet(duet_exe, *args), *fragments, code=code)


def test_bad_settings_file(duet_exe: str, tmp_path: Path) -> None:
    (tmp_path / "duet.toml").write_text("[models.llama]\nthreads = 'lots'\n")
    assert_clean_error(duet(duet_exe, "models"), "models.llama.threads")


def test_not_gguf_and_unreachable_endpoint(duet_exe: str, tmp_path: Path) -> None:
    (tmp_path / "junk.gguf").write_text("hello")
    (tmp_path / "duet.toml").write_text(
        "[models.junk]\nprovider = 'llamacpp'\npath = 'junk.gguf'\n"
        "[models.down]\nprovider = 'openai'\nmodel = 'm'\nbase_url = 'http://127.0.0.1:9/v1'\n"
    )
    assert_clean_error(duet(duet_exe, "ask", "hi", "-m", "junk"), "is not a GGUF model file")
    proc = duet(duet_exe, "ask", "hi", "-m", "down", "--json")
    assert proc.returncode == 1
    assert "endpoint unreachable" in json_lines(proc.stdout)[0]["error"]


def test_chat_keeps_history_and_switches_model(
    duet_exe: str, served: ScriptedOpenAIServer, tmp_path: Path
) -> None:
    (tmp_path / "duet.toml").write_text(
        (tmp_path / "duet.toml").read_text()
        + "\n[models.other]\nprovider = 'openai'\nmodel = 'other'\n"
        + f"base_url = '{served.base_url}'\n"
    )
    served.queue("first reply", "second reply")
    proc = duet(
        duet_exe,
        "chat",
        "-m",
        "served",
        stdin="hello\n/model nope\n/model other\nand again\n/exit\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert "first reply" in proc.stdout and "second reply" in proc.stdout
    assert "unknown model 'nope'" in proc.stdout
    assert [r["model"] for r in served.requests] == ["smollm2", "other"]
    assert served.requests[1]["messages"] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "first reply"},
        {"role": "user", "content": "and again"},
    ]


def test_serve_refuses_a_busy_port_and_a_missing_model(duet_exe: str, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = duet(duet_exe, "serve", "--port", str(port))
        assert_clean_error(proc, f"cannot listen on 127.0.0.1:{port}")
    assert_clean_error(duet(duet_exe, "serve", "-m", f"x={tmp_path}/none.gguf"), "not found")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00" + b"junk" * 64)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    proc = duet(duet_exe, "serve", "-m", f"x={truncated}", "--port", str(free_port))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot serve: llama.cpp")
    assert_clean_error(duet(duet_exe, "serve", "--requantize", "q9"), "choose one of q4_0, q8_0")


def test_a_misconfigured_model_is_listed_and_skipped_not_fatal(
    duet_exe: str, served: ScriptedOpenAIServer, tmp_path: Path
) -> None:
    with (tmp_path / "duet.toml").open("a") as settings:
        settings.write("\n[models.nameless]\nprovider = 'openai'\n")
    listed = {row["name"]: row for row in json_lines(duet(duet_exe, "models", "--json").stdout)}
    assert listed["nameless"]["ready"] is False
    assert "needs `model`" in listed["nameless"]["status"] and listed["served"]["ready"]
    served.queue("still answered")
    proc = duet(duet_exe, "ask", "hi", "-m", "served", "-m", "nameless", "--json")
    rows = {row["model"]: row for row in json_lines(proc.stdout)}
    assert proc.returncode == 0, proc.stderr
    assert rows["served"]["text"] == "still answered"
    assert rows["nameless"]["skipped"] and "needs `model`" in rows["nameless"]["error"]
