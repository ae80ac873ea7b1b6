"""``duet gateway`` from the shell: --explain, start-up errors, and a real run over sockets."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest

from gateway_helpers import ALICE, Scripted, external, free_port, upstream, write_config
from test_cli import assert_clean_error
from test_cli import duet as run_duet

PII_RULES = {
    "targets": ["cloud", "home"],
    "on_pii": "pseudonymise",
    "rules": [
        {"name": "long-local", "min_prompt_tokens": 500, "targets": ["home"]},
        {"name": "phones-stay-home", "pii_types": ["PHONE"], "privacy": "route_local"},
    ],
}
REQUEST = {
    "model": "assistant",
    "messages": [{"role": "user", "content": "Call Dr Jane Smith on +44 7700 900123 today"}],
}


def config(tmp_path: Path) -> Path:
    return write_config(
        {
            "cloud": external("http://127.0.0.1:9/v1", model="gpt-4o-mini"),
            "home": upstream("http://127.0.0.1:9/v1"),
        },
        {"assistant": PII_RULES},
        path=str(tmp_path / "duet.toml"),
    )


def test_explain_names_the_rule_that_fires_and_why(duet_exe: str, tmp_path: Path) -> None:
    conf = config(tmp_path)
    request = tmp_path / "request.json"
    request.write_text(json.dumps(REQUEST))
    proc = run_duet(duet_exe, "--config", str(conf), "gateway", "--explain", str(request))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any("long-local" in line and " no " in line and "< 500" in line for line in lines)
    assert any("phones-stay-home" in line and "yes" in line for line in lines)
    assert "home (local); privacy: route_local" in proc.stdout
    assert "+44 7700" not in proc.stdout  # types are shown, never the values


def test_explain_json_with_key_tags_and_budget(duet_exe: str, tmp_path: Path) -> None:
    conf = config(tmp_path)
    body = json.dumps({**REQUEST, "messages": [{"role": "user", "content": "Hello there"}]})
    proc = run_duet(
        duet_exe, "--config", str(conf), "gateway", "--explain", "-", "--json",
        "--key", "bob", "--tags", "Batch, nightly", "--time-budget-ms", "800",
        stdin=body,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rule"] == "default" and result["privacy_action"] is None
    assert [t["name"] for t in result["targets"]] == ["cloud", "home"]
    assert result["features"] == {
        "prompt_tokens_estimate": 6,
        "pii_types": [],
        "tags": ["batch", "nightly"],
        "key": "bob",
        "team": "ops",
        "time_budget_ms": 800,
    }
    assert [r["rule"] for r in result["rules_not_fired"]] == ["long-local", "phones-stay-home"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--explain", '{"model": "nope", "messages": [{"role": "user", "content": "x"}]}'],
         "unknown route 'nope'"),
        (["--explain", "{not json"], "not valid JSON"),
        (["--explain", '{"model": "assistant", "messages": []}'], "give a chat request"),
        (["--explain", "missing.json"], "no such file"),
        (["--explain", json.dumps(REQUEST), "--key", "mallory"], "no key 'mallory'"),
    ],
)  # fmt: skip
def test_explain_bad_input_is_one_line(
    duet_exe: str, tmp_path: Path, args: list[str], fragment: str
) -> None:
    proc = run_duet(duet_exe, "--config", str(config(tmp_path)), "gateway", *args, cwd=tmp_path)
    assert_clean_error(proc, fragment)


def test_a_bad_policy_stops_the_gateway_before_it_binds(duet_exe: str, tmp_path: Path) -> None:
    conf = write_config(
        {"cloud": external("http://127.0.0.1:9/v1")},
        {"assistant": {"targets": ["cloud", "nowhere"]}},
        path=str(tmp_path / "duet.toml"),
    )
    proc = run_duet(duet_exe, "--config", str(conf), "gateway")
    assert_clean_error(proc, "no upstream or registered model 'nowhere'")
    (tmp_path / "empty.toml").write_text("")
    assert_clean_error(
        run_duet(duet_exe, "--config", str(tmp_path / "empty.toml"), "gateway"), "no gateway routes"
    )


def test_an_unset_key_variable_is_named(duet_exe: str, tmp_path: Path) -> None:
    conf = write_config(
        {"home": upstream("http://127.0.0.1:9/v1")},
        {"assistant": {"targets": ["home"]}},
        keys={"erin": {"key_env": "ERIN_GATEWAY_KEY", "team": "eng"}},
        path=str(tmp_path / "duet.toml"),
    )
    assert_clean_error(
        run_duet(duet_exe, "--config", str(conf), "gateway"),
        "gateway.keys.erin",
        "ERIN_GATEWAY_KEY is not set",
    )


def test_duet_gateway_serves_routes_and_stops_cleanly(duet_exe: str, tmp_path: Path) -> None:
    """The real command: it starts, routes a request with PII to the local upstream and a
    plain one to the external one, and on SIGTERM shuts down with both rows audited."""
    with Scripted() as cloud, Scripted() as home:
        conf = write_config(
            {"cloud": external(cloud, model="gpt-4o-mini"), "home": upstream(home)},
            {"assistant": PII_RULES},
            path=str(tmp_path / "duet.toml"),
        )
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DUET_")}
        proc = subprocess.Popen(
            [duet_exe, "--config", str(conf), "gateway", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.communicate()
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the gateway never became healthy"
                time.sleep(0.1)
            client = openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key=ALICE, max_retries=0
            )
            client.chat.completions.create(**REQUEST)  # type: ignore[call-overload]
            plain = client.chat.completions.with_raw_response.create(
                model="assistant", messages=[{"role": "user", "content": "Hello"}]
            )
            assert plain.headers["x-duet-target"] == "cloud"
            assert plain.headers["x-duet-location"] == "external"
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
        # uvicorn shuts down gracefully, then re-raises the signal it caught, as a server
        # should: the exit status says "ended by SIGTERM".
        assert proc.returncode in (0, -signal.SIGTERM), stderr
        assert "Traceback" not in stderr
        assert len(home.requests) == 1 and "+44 7700 900123" in json.dumps(home.requests[0])
        assert len(cloud.requests) == 1 and "+44" not in json.dumps(cloud.requests[0])
    with sqlite3.connect(tmp_path / "audit.db") as db:
        rows = db.execute("SELECT rule, target, pii_types FROM duet_audit ORDER BY ts").fetchall()
    assert rows == [("phones-stay-home", "home", "PERSON,PHONE"), ("default", "cloud", "")]
