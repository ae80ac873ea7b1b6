"""``duet eval --ray local``: cases run as Ray tasks on a Ray instance the command starts;
results are identical to the local run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from llmduet.testing import Reply, ScriptedOpenAIServer

pytest.importorskip("ray")
pytestmark = pytest.mark.model


def texts(folder: Path) -> dict[str, str | None]:
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    return {f"{r['model']}/{r['case_id']}": r["error"] or r["text"] for r in rows}


def test_ray_run_matches_the_local_run(
    tmp_path: Path, duet_exe: str, server: ScriptedOpenAIServer
) -> None:
    (tmp_path / "duet.toml").write_text(
        f"[models.served]\nprovider = 'openai'\nmodel = 'm'\nbase_url = '{server.base_url}'\n"
        "max_retries = 0\n"
    )
    (tmp_path / "cases.jsonl").write_text(
        "".join(
            f'{{"id": "{i}", "input": "{prompt}", "reference": "x"}}\n'
            for i, prompt in enumerate(["Say hi.", "Name a colour.", "What is 2 + 2?"])
        )
    )
    server.default = Reply.text("scripted answer")

    def run(out: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [duet_exe, "eval", "cases.jsonl", "-m", "llama", "-m", "served", "--max-tokens", "8",
             "--metric", "exact_match", "--out", out, *extra],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )  # fmt: skip

    local = run("local")
    assert local.returncode == 0, local.stderr
    distributed = run("ray", "--ray", "local")
    assert distributed.returncode == 0, distributed.stderr
    assert texts(tmp_path / "ray") == texts(tmp_path / "local")
    assert texts(tmp_path / "ray")["served/1"] == "scripted answer"
    assert len(server.requests) == 6  # the Ray run really called the model again

    server.default = Reply(status=404, error_message="no such model", error_code="model_not_found")
    failing = run("failing", "--ray", "local")
    assert failing.returncode == 0, failing.stderr
    errors = texts(tmp_path / "failing")
    assert all("has no model 'm' (404)" in str(errors[f"served/{i}"]) for i in range(3))
    assert "Traceback" not in failing.stderr
