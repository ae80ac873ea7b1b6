"""``duet agents run`` and ``compare`` end to end, over real sockets to scripted models."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from llmduet.testing import Reply, ScriptedOpenAIServer, ToolCallReply

TEAM = """
[team]
name = "adders"
kind = "supervisor"
supervisor = "lead"
max_steps = 6

[agents.lead]
model = "api"
instructions = "Route the work."

[agents.worker]
model = "box"
instructions = "Compute with the calculator."
tools = ["calculator"]
private = true
"""


def call(name: str, arguments: str) -> Reply:
    return Reply(chunks=[], tool_calls=[ToolCallReply(name, arguments)])


def one_run() -> list[Reply]:
    return [
        call("transfer_to_worker", '{"task": "add 2 and 3"}'),
        call("calculator", '{"expression": "2 + 3"}'),
        Reply.text("It is 5."),
        call("final_answer", '{"answer": "5"}'),
    ]


def setup(tmp_path: Path, server: ScriptedOpenAIServer) -> None:
    (tmp_path / "team.toml").write_text(TEAM)
    (tmp_path / "duet.toml").write_text(
        "[models.api]\nprovider = 'openai'\nmodel = 'gpt-4o-mini'\n"
        f"base_url = '{server.base_url}'\nlocation = 'external'\n"
        f"[models.box]\nprovider = 'openai'\nmodel = 'local-box'\nbase_url = '{server.base_url}'\n"
    )


def duet(exe: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [exe, "agents", *args], capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "200"},
    )  # fmt: skip


def test_run_streams_json_events(
    tmp_path: Path, duet_exe: str, server: ScriptedOpenAIServer
) -> None:
    setup(tmp_path, server)
    server.queue(*one_run())
    proc = duet(duet_exe, tmp_path, "run", "What is 2 + 3?", "--team", "team.toml", "--json")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("step_start") == 4 and kinds[-1] == "final"
    assert [k for k in kinds if k in ("handoff", "tool_call", "tool_result")] == [
        "handoff",
        "tool_call",
        "tool_result",
    ]
    assert next(e for e in events if e["event"] == "tool_result")["content"] == "5"
    final = events[-1]
    assert final["answer"] == "5" and final["status"] == "done"
    assert [s["location"] for s in final["steps"]] == ["external", "local", "local", "external"]
    assert all(e["t"] >= 0 for e in events)
    models = [r["model"] for r in server.requests]
    assert models == ["gpt-4o-mini", "local-box", "local-box", "gpt-4o-mini"]


def test_compare_skips_the_variant_that_would_leak_private_data(
    tmp_path: Path, duet_exe: str, server: ScriptedOpenAIServer
) -> None:
    setup(tmp_path, server)
    server.queue(*one_run(), *one_run())
    proc = duet(
        duet_exe, tmp_path, "compare", "What is 2 + 3?", "--team", "team.toml", "--json",
        "--local-model", "box", "--api-model", "api",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = {row["variant"]: row for row in map(json.loads, proc.stdout.splitlines())}
    assert "private but its model 'api' runs outside" in rows["all-api"]["skipped"]
    assert rows["all-local"]["answer"] == rows["hybrid"]["answer"] == "5"
    assert rows["all-local"]["external_prompt_bytes"] == 0 < rows["hybrid"]["external_prompt_bytes"]
    assert rows["hybrid"]["steps"] == 4 and rows["hybrid"]["tool_calls"] == 1
    assert len(server.requests) == 8  # the refused variant never called a model


def test_bad_teams_and_tasks_are_one_line_errors(
    tmp_path: Path, duet_exe: str, server: ScriptedOpenAIServer
) -> None:
    setup(tmp_path, server)
    (tmp_path / "bad.toml").write_text(TEAM.replace('tools = ["calculator"]', 'tools = ["shell"]'))
    for args, message in [
        (("run", "x", "--team", "bad.toml"), "unknown tool 'shell'"),
        (("run", "x", "--team", "missing.toml"), "missing.toml not found"),
        (("run", "   ", "--team", "team.toml"), "the task is empty"),
        (("run", "x", "--team", "research", "--index", "nowhere"), "no index at nowhere"),
        (("compare", "x", "--team", "team.toml", "--variants", "all-cloud"), "unknown variant"),
    ]:
        proc = duet(duet_exe, tmp_path, *args)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert server.requests == []
