"""``duet audit``: what the gateway spent, where requests went, and which PII it saw."""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from llmduet.cli.app import app, console, fail, friendly_errors

if TYPE_CHECKING:
    from llmduet.gateway.audit import PiiSummary, TeamSpend, TrafficShare

WHEN_FORMS = "a duration ago (30m, 24h, 7d, 2w) or a local date/time (2026-12-01, 2026-12-01T10:00)"
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


def parse_when(text: str, option: str, now: float | None = None) -> float:
    """Unix time of ``24h`` (ago), ``2026-12-01`` or ``2026-12-01T10:00`` (local time);
    a usage error (exit code 2) naming ``option`` and the accepted forms otherwise."""
    value = text.strip()
    match = DURATION.fullmatch(value.lower())
    if match:
        seconds = float(match.group(1)) * UNITS[match.group(2)]
        return (time.time() if now is None else now) - seconds
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: use {WHEN_FORMS}", param_hint=option) from None
    return moment.timestamp()  # naive means local time


def stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def percent(fraction: float) -> str:
    return f"{fraction:.1%}"


def spend_table(spends: list[TeamSpend]) -> Table:
    table = Table(title="Spend by team")
    for column in ("team", "requests", "tokens in", "tokens out", "USD", "local", "external"):
        table.add_column(column, justify="left" if column == "team" else "right")
    for spend in spends:
        table.add_row(
            escape(spend.team),
            f"{spend.requests:,}",
            f"{spend.prompt_tokens:,}",
            f"{spend.completion_tokens:,}",
            f"{spend.cost_usd:.4f}",
            f"{spend.local_requests:,}",
            f"{spend.external_requests:,}",
        )
    if len(spends) > 1:
        table.add_section()
        table.add_row(
            "total",
            f"{sum(s.requests for s in spends):,}",
            f"{sum(s.prompt_tokens for s in spends):,}",
            f"{sum(s.completion_tokens for s in spends):,}",
            f"{sum(s.cost_usd for s in spends):.4f}",
            f"{sum(s.local_requests for s in spends):,}",
            f"{sum(s.external_requests for s in spends):,}",
        )
    return table


def share_table(share: TrafficShare) -> Table:
    table = Table(title="Traffic share")
    for column in ("served", "requests", "% requests", "tokens", "% tokens"):
        table.add_column(column, justify="left" if column == "served" else "right")
    for label, part in (
        ("local", share.local),
        ("external", share.external),
        ("blocked / rejected", share.blocked),
    ):
        table.add_row(
            label,
            f"{part.requests:,}",
            percent(part.request_fraction),
            f"{part.tokens:,}",
            percent(part.token_fraction),
        )
    table.add_section()
    table.add_row("total", f"{share.requests:,}", "", f"{share.tokens:,}", "")
    return table


def pii_tables(summary: PiiSummary) -> list[Table]:
    counts = Table(title=f"PII found in {summary.requests:,} requests")
    counts.add_column("type or action")
    counts.add_column("requests", justify="right")
    for name, count in summary.by_type.items():
        counts.add_row(escape(name), f"{count:,}")
    if summary.by_type:
        counts.add_section()
    for action, count in summary.by_action.items():
        counts.add_row(f"action: {escape(action)}", f"{count:,}")
    latest = Table(title=f"Latest PII events ({len(summary.events)})")
    for column in ("time", "team", "key", "route", "types", "action", "target", "status"):
        latest.add_column(column, justify="right" if column == "status" else "left")
    for event in summary.events:
        latest.add_row(
            stamp(event.ts),
            escape(event.team or "-"),
            escape(event.key or "-"),
            escape(event.route),
            escape(", ".join(event.pii_types)),
            escape(event.action or "-"),
            escape(event.target or "-"),
            str(event.status),
        )
    return [counts, latest]


@app.command("audit")
@friendly_errors
def audit_command(
    db: str | None = typer.Option(
        None,
        "--db",
        envvar="DUET_AUDIT_URL",
        show_envvar=True,
        help="the audit log: a SQLite file or postgresql:// URL (default: .duet/audit.db)",
    ),
    since: str = typer.Option("24h", help=f"from: {WHEN_FORMS}"),
    until: str | None = typer.Option(None, help="up to (default: now); same forms as --since"),
    events: int = typer.Option(20, "--events", min=0, help="how many latest PII events to list"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Spend by team, local/external traffic share and PII events from the gateway's log."""
    from llmduet.gateway.audit import mask_url, open_audit, sqlite_path

    start = parse_when(since, "'--since'")
    end = None if until is None else parse_when(until, "'--until'")
    if end is not None and end <= start:
        raise fail(f"--until {until} is not after --since {since}")
    path = sqlite_path(db)
    if path is not None and not path.is_file():
        raise fail(
            f"no audit log found at {path}: point at one with --db PATH_OR_URL "
            "or the DUET_AUDIT_URL environment variable"
        )
    with open_audit(db) as log:
        spends = log.spend_by_team(start, end)
        share = log.traffic_share(start, end)
        pii = log.pii_events(start, end, limit=events)
    if as_json:
        report: dict[str, Any] = {
            "db": mask_url(db) if db else str(path),
            "since": start,
            "until": end,
            "spend_by_team": [asdict(spend) for spend in spends],
            "traffic_share": share.to_dict(),
            "pii_events": pii.to_dict(),
        }
        print(json.dumps(report))
        return
    window = f"{stamp(start)} to {'now' if end is None else stamp(end)}"
    if not share.requests:
        console.print(f"no requests recorded from {window}")
        return
    console.print(f"[bold]{share.requests:,} requests[/] from {window}")
    console.print(spend_table(spends))
    console.print(share_table(share))
    for table in pii_tables(pii):
        console.print(table)
