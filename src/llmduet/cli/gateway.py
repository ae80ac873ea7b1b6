"""``duet gateway``: the OpenAI-compatible hybrid gateway, and ``--explain`` for its policy."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from llmduet.cli.app import State, app, console, err_console, fail, friendly_errors
from llmduet.cli.serve import ensure_port_free
from llmduet.config import load_settings


def _read_request(source: str) -> dict[str, Any]:
    """A chat request from a file, ``-`` (stdin) or inline JSON."""
    if source.lstrip().startswith("{"):
        text, where = source, "--explain"
    elif source == "-":
        text, where = sys.stdin.read(), "stdin"
    else:
        path = Path(source)
        if not path.is_file():
            raise fail(f"--explain {source}: no such file; give a JSON request file, - or JSON")
        text, where = path.read_text(encoding="utf-8"), source
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"{where} is not valid JSON: {exc}") from None
    if (
        not isinstance(body, dict)
        or not body.get("messages")
        or not isinstance(body["messages"], list)
    ):
        raise fail(f'{where}: give a chat request, {{"model": ROUTE, "messages": [...]}}')
    return body


@app.command("gateway")
@friendly_errors
def gateway_command(
    host: str = typer.Option("127.0.0.1", help="address to bind (loopback by default)"),
    port: int = typer.Option(8100, min=0, max=65535),
    explain: str | None = typer.Option(
        None,
        "--explain",
        metavar="REQUEST",
        help="print which rule fires for this chat request (a JSON file, - or inline JSON) "
        "and why, then exit",
    ),
    key: str | None = typer.Option(None, "--key", help="with --explain: the caller's key name"),
    tags: str = typer.Option("", "--tags", help="with --explain: x-duet-tags, comma-separated"),
    time_budget_ms: int | None = typer.Option(
        None, "--time-budget-ms", min=1, help="with --explain: x-duet-time-budget-ms"
    ),
    as_json: bool = typer.Option(False, "--json", help="with --explain: print JSON"),
) -> None:
    """Route OpenAI API requests by policy across local and external models."""
    from llmduet.gateway.service import TAGS_HEADER, TIME_BUDGET_HEADER, Gateway

    settings = load_settings(State.config)
    if explain is not None:
        gateway = Gateway(settings)
        headers = {TAGS_HEADER: tags}
        if time_budget_ms is not None:
            headers[TIME_BUDGET_HEADER] = str(time_budget_ms)
        body = _read_request(explain)
        caller = gateway.caller_named(key) if key else None
        _explain(gateway, body, caller, headers, as_json)
        return
    from llmduet.gateway.app import create_gateway_app
    from llmduet.serve.server import GracefulServer

    gateway = Gateway(settings)
    gateway.load_keys()  # a missing secret or an audit log that cannot open fails here,
    ensure_port_free(host, port)  # before the port is bound
    gateway.open_audit()
    routes = ", ".join(gateway.routes)
    places = ", ".join(f"{n} ({u.location})" for n, u in gateway.upstreams.items())
    err_console.print(f"gateway on http://{host}:{port}/v1 — routes: {routes}; upstreams: {places}")
    server = GracefulServer(
        create_gateway_app(gateway), host=host, port=port, log_level="warning", access_log=False
    )
    server.run()


def _explain(
    gateway: Any, body: dict[str, Any], caller: Any, headers: dict[str, str], as_json: bool
) -> None:
    from llmduet.serve.errors import ServingError

    try:
        decision, features = gateway.decide(body, caller, headers)
    except ServingError as exc:
        raise fail(exc.message) from None
    locations = {name: u.location for name, u in gateway.upstreams.items()}
    result = {
        "route": decision.route,
        "rule": decision.rule,
        "reason": decision.reason,
        "targets": [{"name": t, "location": locations[t]} for t in decision.targets],
        "privacy_action": decision.privacy_action,
        "features": {
            "prompt_tokens_estimate": features.prompt_tokens,
            "pii_types": sorted(features.pii_types),
            "tags": sorted(features.tags),
            "key": features.key,
            "team": features.team,
            "time_budget_ms": features.time_budget_ms,
        },
        "rules_not_fired": [{"rule": r, "why": why} for r, why in decision.not_fired],
    }
    if as_json:
        console.print_json(json.dumps(result))
        return
    f = result["features"]
    console.print(f"route [bold]{decision.route}[/]", highlight=False)
    for label, value in (
        ("prompt tokens (estimate)", f["prompt_tokens_estimate"]),
        ("private data", ", ".join(f["pii_types"]) or "none"),
        ("tags", ", ".join(f["tags"]) or "none"),
        ("key / team", f"{f['key'] or '-'} / {f['team'] or '-'}"),
        ("time budget", f"{f['time_budget_ms']} ms" if f["time_budget_ms"] else "none"),
    ):
        console.print(f"  {label}: {value}", highlight=False)
    table = Table("rule", "fired", "why")
    for rule, why in decision.not_fired:
        table.add_row(rule, "no", why)
    table.add_row(decision.rule, "[green]yes[/]", decision.reason)
    console.print(table)
    targets = ", ".join(f"{t['name']} ({t['location']})" for t in result["targets"])
    action = decision.privacy_action or "none needed (no private data)"
    if action == "pseudonymise" and all(t["location"] == "local" for t in result["targets"]):
        action += " (nothing to do: every target is local)"
    console.print(
        f"→ targets in order: {targets or 'none: the request is refused'}; privacy: {action}",
        highlight=False,
    )
