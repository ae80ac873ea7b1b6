"""The gateway's audit log on SQLite and PostgreSQL, its crash safety, and ``duet audit``."""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from llmduet.errors import ConfigError
from llmduet.gateway.audit import (
    COLUMNS,
    TABLE,
    AuditLog,
    AuditRecord,
    SQLiteAuditLog,
    open_audit,
)
from postgres import find_binaries, throwaway_postgres
from test_cli import assert_clean_error
from test_cli import duet as run_duet

T0 = 1_750_000_000.0


def record(i: int, ts: float, **changes: Any) -> AuditRecord:
    base = AuditRecord(
        ts=ts,
        request_id=f"req-{i}",
        key="alpha-key",
        team="alpha",
        route="chat",
        rule="default",
        target="llama",
        location="local",
        pii_types=(),
        privacy_action=None,
        prompt_tokens=100,
        completion_tokens=50,
        cost_usd=0.002,
        latency_ms=120.5,
        ttft_ms=15.25,
        status=200,
        error=None,
        stream=False,
        attempts=1,
    )
    return replace(base, **changes)


def sample(t0: float = T0) -> list[AuditRecord]:
    """Six requests with known totals; the last one is far later than the others."""
    return [
        record(1, t0 + 1),
        record(
            2, t0 + 2, location="external", target="gpt", prompt_tokens=200,
            completion_tokens=100, cost_usd=0.03, pii_types=("EMAIL",),
            privacy_action="pseudonymise", stream=True, attempts=2,
        ),
        record(
            3, t0 + 3, team="beta", key="beta-key", location="external", target="gpt",
            prompt_tokens=300, completion_tokens=150, cost_usd=0.05, ttft_ms=None,
        ),
        record(
            4, t0 + 4, team="beta", key="beta-key", location=None, target=None,
            prompt_tokens=40, completion_tokens=0, cost_usd=None,
            pii_types=("EMAIL", "CREDIT_CARD"), privacy_action="block", status=403,
            error="pii_blocked", attempts=0,
        ),
        record(
            5, t0 + 5, team=None, key=None, prompt_tokens=10, completion_tokens=10,
            cost_usd=0.001, pii_types=("PHONE",), privacy_action="route_local",
        ),
        record(
            6, t0 + 100, location="external", target="gpt", prompt_tokens=1000,
            completion_tokens=1000, cost_usd=1.0, pii_types=("EMAIL",),
            privacy_action="pseudonymise",
        ),
    ]  # fmt: skip


# -- backends ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    if find_binaries() is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    with throwaway_postgres() as cluster:
        yield cluster.url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the session's server."""
    import psycopg

    name = f"audit_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield postgres_server.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgres"])
def audit_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def audit(audit_url: str) -> Iterator[AuditLog]:
    log = open_audit(audit_url)
    yield log
    log.close()


@pytest.fixture
def filled(audit: AuditLog) -> AuditLog:
    for item in reversed(sample()):  # written out of order: queries order by time
        audit.write(item)
    audit.flush()
    return audit


# -- behaviour on both backends --------------------------------------------------------------


def test_records_round_trip(audit: AuditLog) -> None:
    rows = sample()
    for item in rows:
        audit.write(item)
    audit.flush()
    assert audit.records() == rows
    assert audit.records(since=T0 + 4) == rows[3:]
    assert audit.records(since=T0 + 101) == []


def test_rows_are_committed_soon_after_write(audit: AuditLog) -> None:
    audit.write(record(1, T0))
    deadline = time.monotonic() + 2.0
    while not audit.records() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert audit.records() == [record(1, T0)]  # without flush: the writer commits on its own


def test_spend_by_team_totals_and_windows(filled: AuditLog) -> None:
    everything = filled.spend_by_team(T0)
    assert [s.team for s in everything] == ["alpha", "beta", "(none)"]  # by cost, descending
    alpha = everything[0]
    assert (alpha.requests, alpha.prompt_tokens, alpha.completion_tokens) == (3, 1300, 1150)
    assert alpha.cost_usd == pytest.approx(1.032)
    assert (alpha.local_requests, alpha.external_requests) == (1, 2)
    beta = everything[1]
    assert (beta.requests, beta.prompt_tokens, beta.cost_usd) == (2, 340, pytest.approx(0.05))
    assert (beta.local_requests, beta.external_requests) == (0, 1)  # the blocked one is neither

    early = filled.spend_by_team(T0, until=T0 + 50)
    assert [s.team for s in early] == ["beta", "alpha", "(none)"]
    assert early[1].cost_usd == pytest.approx(0.032) and early[1].requests == 2
    assert [s.team for s in filled.spend_by_team(T0 + 3, until=T0 + 50)] == ["beta", "(none)"]
    assert filled.spend_by_team(T0 + 1000) == []


def test_spend_seeds_budgets_by_team_or_key(filled: AuditLog) -> None:
    assert filled.spend(T0) == pytest.approx({"alpha": 1.032, "beta": 0.05, "(none)": 0.001})
    assert filled.spend(T0 + 4, by="key") == pytest.approx(
        {"alpha-key": 1.0, "beta-key": 0.0, "(none)": 0.001}
    )


def test_traffic_share(filled: AuditLog) -> None:
    share = filled.traffic_share(T0, until=T0 + 50)
    assert (share.requests, share.tokens) == (5, 960)
    assert (share.local.requests, share.local.tokens) == (2, 170)
    assert (share.external.requests, share.external.tokens) == (2, 750)
    assert (share.blocked.requests, share.blocked.tokens) == (1, 40)
    assert share.local.request_fraction == pytest.approx(0.4)
    assert share.blocked.request_fraction == pytest.approx(0.2)
    assert share.external.token_fraction == pytest.approx(750 / 960)
    empty = filled.traffic_share(T0 + 1000)
    assert empty.requests == 0 and empty.local.request_fraction == 0.0


def test_pii_events_counts_and_latest(filled: AuditLog) -> None:
    summary = filled.pii_events(T0, until=T0 + 50, limit=2)
    assert summary.requests == 3
    assert summary.by_type == {"EMAIL": 2, "CREDIT_CARD": 1, "PHONE": 1}
    assert list(summary.by_type) == ["EMAIL", "CREDIT_CARD", "PHONE"]  # most frequent first
    assert summary.by_action == {"block": 1, "pseudonymise": 1, "route_local": 1}
    assert [e.ts for e in summary.events] == [T0 + 5, T0 + 4]  # newest first, limited
    blocked = summary.events[1]
    assert blocked.pii_types == ("CREDIT_CARD", "EMAIL")
    assert (blocked.team, blocked.key, blocked.action, blocked.target, blocked.status) == (
        "beta", "beta-key", "block", None, 403,
    )  # fmt: skip
    everything = filled.pii_events(T0)
    assert everything.by_type["EMAIL"] == 3 and everything.by_action["pseudonymise"] == 2
    assert [e.ts for e in everything.events] == [T0 + 100, T0 + 5, T0 + 4, T0 + 2]


def test_schema_has_exactly_the_record_fields(audit: AuditLog) -> None:
    expected = [f.name for f in fields(AuditRecord)]
    assert list(COLUMNS) == expected
    assert audit.columns() == expected  # no column could hold a prompt or a PII value


def test_a_row_the_database_refuses_is_dropped_loudly_not_the_batch(
    audit: AuditLog, caplog: pytest.LogCaptureFixture
) -> None:
    good = [record(i, T0 + i) for i in range(6)]
    bad = record(99, T0 + 3, route=None)  # a bug upstream: a required field missing
    for item in [*good[:3], bad, *good[3:]]:
        audit.write(item)
    with caplog.at_level(logging.WARNING, logger="llmduet.gateway.audit"):
        audit.flush()
    assert audit.records() == good
    assert "refused row req-99" in caplog.text


def test_two_gateway_instances_share_one_postgres(postgres_url: str) -> None:
    with ThreadPoolExecutor(4) as pool:  # instances starting together create the schema once
        first, second, reader, spare = pool.map(open_audit, [postgres_url] * 4)
    try:
        for i in range(50):
            first.write(record(i, T0 + i, team="alpha", request_id=f"a-{i}"))
            second.write(record(i, T0 + i, team="beta", request_id=f"b-{i}", cost_usd=0.01))
        first.flush()
        second.flush()
        spends = {s.team: s for s in reader.spend_by_team(T0)}
        assert spends["alpha"].requests == 50 and spends["beta"].requests == 50
        assert reader.spend(T0) == pytest.approx({"alpha": 0.1, "beta": 0.5})
        assert len(spare.records()) == 100
    finally:
        for log in (first, second, reader, spare):
            log.close()


def test_writer_survives_a_postgres_restart(caplog: pytest.LogCaptureFixture) -> None:
    if find_binaries() is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    with throwaway_postgres() as cluster:
        log = open_audit(cluster.url)
        try:
            log.write(record(1, T0 + 1))
            log.flush()
            cluster.stop()
            with caplog.at_level(logging.WARNING, logger="llmduet.gateway.audit"):
                for i in range(2, 6):
                    log.write(record(i, T0 + i))
                time.sleep(0.3)  # the writer fails and backs off meanwhile
                cluster.start()
                log.flush(timeout_s=20)
            assert [r.request_id for r in log.records()] == [f"req-{i}" for i in range(1, 6)]
            assert "retrying" in caplog.text
        finally:
            log.close()


# -- the record --------------------------------------------------------------------------------


def test_pii_types_are_sorted_labels_never_values() -> None:
    assert record(1, T0, pii_types=("PHONE", "EMAIL", "PHONE")).pii_types == ("EMAIL", "PHONE")
    with pytest.raises(ValueError, match="never values") as caught:
        record(1, T0, pii_types=("jane@example.com",))
    assert "jane@example.com" not in str(caught.value)


# -- SQLite durability and the writer thread ---------------------------------------------------

KILLED_WRITER = """
import sys, time
from dataclasses import replace
from llmduet.gateway.audit import AuditRecord, open_audit

template = AuditRecord(
    ts=0.0, request_id="", key="k", team="t", route="chat", rule="default", target="llama",
    location="local", pii_types=("EMAIL",), privacy_action="route_local", prompt_tokens=1,
    completion_tokens=1, cost_usd=0.0, latency_ms=1.0, ttft_ms=None, status=200, error=None,
    stream=False, attempts=1,
)
log = open_audit(sys.argv[1])
for i in range(int(sys.argv[2])):
    log.write(replace(template, ts=time.time(), request_id=f"committed-{i}"))
log.flush()
print("committed", flush=True)
i = 0
while True:
    log.write(replace(template, ts=time.time(), request_id=f"after-{i}"))
    i += 1
    if i % 50 == 0:
        time.sleep(0.0005)
"""


def test_committed_rows_survive_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    committed = 2000
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(db), str(committed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "committed", proc.stderr.read() if proc.stderr else ""
        time.sleep(0.3)  # the writer thread is busy committing "after" rows
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        count = connection.execute(
            f"SELECT COUNT(*) FROM {TABLE} WHERE request_id LIKE 'committed-%'"
        ).fetchone()[0]
        after = connection.execute(
            f"SELECT COUNT(*) FROM {TABLE} WHERE request_id LIKE 'after-%'"
        ).fetchone()[0]
        mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    connection.close()
    assert count == committed
    assert after > 0  # it was killed while writing, not while idle
    assert mode == "wal"
    reopened = open_audit(str(db))
    try:
        assert len(reopened.records()) == committed + after
    finally:
        reopened.close()


class FlakySQLite(SQLiteAuditLog):
    """Fails the first ``failures`` commits the way a locked database does."""

    def __init__(self, path: Path, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        super().__init__(path)

    def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise sqlite3.OperationalError("database is locked")
        super()._insert(rows)


def test_writer_retries_a_transient_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = FlakySQLite(tmp_path / "audit.db", failures=2)
    rows = [record(i, T0 + i) for i in range(5)]
    with caplog.at_level(logging.WARNING, logger="llmduet.gateway.audit"):
        for item in rows:
            log.write(item)
        log.flush(timeout_s=10)
        log.close()
    assert log.attempts >= 3
    assert log.records() == rows  # a closed log still answers queries
    assert "database is locked" in caplog.text and "retrying" in caplog.text


def test_close_gives_up_on_a_dead_database_and_says_how_many_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = FlakySQLite(tmp_path / "audit.db", failures=10**9)
    with caplog.at_level(logging.WARNING, logger="llmduet.gateway.audit"):
        for i in range(3):
            log.write(record(i, T0 + i))
        with pytest.raises(TimeoutError, match="database is locked"):
            log.flush(timeout_s=0.2)
        started = time.monotonic()
        log.close(timeout_s=0.3)
        assert time.monotonic() - started < 4
        log.close()  # idempotent
        log.write(record(9, T0))  # after close: refused, and said so
    assert "3 rows lost" in caplog.text
    assert "closed: row req-9 not recorded" in caplog.text


def test_write_costs_microseconds(tmp_path: Path) -> None:
    log = open_audit(str(tmp_path / "audit.db"))
    rows = [record(i, T0 + i) for i in range(10_000)]
    started = time.perf_counter()
    for item in rows:
        log.write(item)
    per_write = (time.perf_counter() - started) / len(rows)
    log.flush(timeout_s=30)
    assert len(log.records()) == len(rows)
    log.close()
    assert per_write < 20e-6, f"{per_write * 1e6:.1f} µs per write()"


# -- opening -------------------------------------------------------------------------------------


def test_url_forms(tmp_path: Path) -> None:
    default = open_audit(None)
    relative = open_audit("sqlite:///logs/relative.db")
    absolute = open_audit(f"sqlite:///{tmp_path / 'abs.db'}")  # sqlite:////tmp/...
    plain = open_audit("plain.db")
    for log in (default, relative, absolute, plain):
        log.close()
    assert (tmp_path / ".duet/audit.db").is_file()  # the autouse fixture chdirs to tmp_path
    assert (tmp_path / "logs/relative.db").is_file()
    assert (tmp_path / "abs.db").is_file() and (tmp_path / "plain.db").is_file()


@pytest.mark.parametrize(
    "url", ["mysql://u:pw@host/db", "http://example.com/x", "", "sqlite://", "sqlite:///:memory:"]
)
def test_unsupported_urls_are_a_clear_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_audit(url)
    message = str(caught.value)
    assert "postgresql://" in message and "sqlite:///" in message and "\n" not in message
    assert "pw" not in message


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_text("not sqlite at all, " * 100)
    with pytest.raises(ConfigError, match=r"notes\.db.*not a database"):
        open_audit("notes.db")
    with pytest.raises(ConfigError, match="cannot open the audit log"):
        open_audit(str(tmp_path))  # a directory


def test_unreachable_postgres_hides_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        open_audit("postgresql://u:secret@127.0.0.1:1/db")
    message = str(caught.value)
    assert "secret" not in message
    assert "postgresql://u:***@127.0.0.1:1/db" in message
    assert "refused" in message.lower() or "failed" in message.lower()


# -- duet audit ----------------------------------------------------------------------------------


def fill(path: Path, t0: float) -> None:
    log = open_audit(str(path))
    for item in sample(t0):
        log.write(item)
    log.close()


def local_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).isoformat(timespec="seconds")


def test_duet_audit_prints_the_three_tables(duet_exe: str, tmp_path: Path) -> None:
    t0 = float(int(time.time()) - 7200)
    fill(tmp_path / "gateway.db", t0)
    proc = run_duet(duet_exe, "audit", "--db", "gateway.db", "--events", "3")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for fragment in ("Spend by team", "Traffic share", "PII found", "Latest PII events"):
        assert fragment in out
    alpha = next(line for line in out.splitlines() if "alpha" in line)
    assert "1.0320" in alpha and "1,300" in alpha and "1,150" in alpha
    assert "beta" in out and "(none)" in out
    assert "50.0%" in out and "16.7%" in out  # external and blocked shares of 6 requests
    assert "CREDIT_CARD" in out and "action: pseudonymise" in out
    latest = [line for line in out.split("Latest PII events")[1].splitlines() if "│ 20" in line]
    assert len(latest) == 3  # --events 3, newest first
    assert "alpha-key" in latest[0] and "PHONE" in latest[1] and "beta-key" in latest[2]
    assert "jane" not in out.lower()


def test_duet_audit_json_and_env_default(duet_exe: str, tmp_path: Path) -> None:
    t0 = float(int(time.time()) - 86400 * 3)
    fill(tmp_path / "gateway.db", t0)
    proc = run_duet(
        duet_exe,
        "audit",
        "--since",
        local_iso(t0),
        "--until",
        local_iso(t0 + 50),
        "--json",
        env={"DUET_AUDIT_URL": str(tmp_path / "gateway.db")},
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["since"] == t0 and report["until"] == t0 + 50
    assert [s["team"] for s in report["spend_by_team"]] == ["beta", "alpha", "(none)"]
    assert report["spend_by_team"][1]["cost_usd"] == pytest.approx(0.032)
    share = report["traffic_share"]
    assert share["local"]["requests"] == 2 and share["local"]["request_fraction"] == 0.4
    assert share["blocked"]["tokens"] == 40
    assert report["pii_events"]["by_type"] == {"EMAIL": 2, "CREDIT_CARD": 1, "PHONE": 1}
    assert [e["ts"] for e in report["pii_events"]["events"]] == [t0 + 5, t0 + 4, t0 + 2]
    recent = json.loads(
        run_duet(duet_exe, "audit", "--json", env={"DUET_AUDIT_URL": "gateway.db"}).stdout
    )
    assert recent["traffic_share"]["requests"] == 0  # the default window is the last 24 h


def test_duet_audit_without_a_log_is_one_line(duet_exe: str, tmp_path: Path) -> None:
    proc = run_duet(duet_exe, "audit")
    assert_clean_error(proc, "no audit log found at .duet/audit.db", "--db", "DUET_AUDIT_URL")
    assert not (tmp_path / ".duet").exists()  # a read command creates nothing
    assert_clean_error(
        run_duet(duet_exe, "audit", "--db", "mysql://x/y"), "not understood", "postgresql://"
    )


def test_duet_audit_bad_since_is_one_line(duet_exe: str, tmp_path: Path) -> None:
    fill(tmp_path / "gateway.db", T0)
    proc = run_duet(duet_exe, "audit", "--db", "gateway.db", "--since", "yesterday")
    assert_clean_error(proc, "--since", "yesterday", "24h", "2026-12-01", code=2)
