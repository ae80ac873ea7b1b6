"""``duet models``: what is registered and whether it can run here."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from llmduet.cli.app import app, console, friendly_errors, registry
from llmduet.errors import ConfigError
from llmduet.models.base import Readiness


@app.command("models")
@friendly_errors
def models_command(
    as_json: bool = typer.Option(False, "--json", help="one JSON object per model"),
) -> None:
    """List registered models: provider, where it runs, ready or why not."""
    models = registry()
    rows: list[dict[str, Any]] = []
    for name in models.names():
        spec = models.spec(name)
        try:
            backend = models.backend(name)
        except ConfigError as exc:  # a misconfigured entry is listed, not fatal
            readiness, basis = Readiness(False, str(exc)), "-"
        else:
            readiness, basis = backend.readiness(), backend.cost_model.basis
        rows.append(
            {
                "name": name,
                "provider": spec.provider,
                "model": spec.model
                or spec.path
                or ("bundled SmolLM2-135M-Instruct" if spec.provider == "llamacpp" else None),
                "location": spec.resolved_location,
                "endpoint": spec.base_url,
                "ready": readiness.ready,
                "status": readiness.reason,
                "cost_basis": basis,
            }
        )
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    table = Table(title="Registered models")
    for column in ("name", "provider", "model", "location", "price", "status"):
        table.add_column(column)
    for row in rows:
        status = "[green]ready[/]" if row["ready"] else f"[yellow]{escape(row['status'])}[/]"
        table.add_row(
            row["name"],
            row["provider"],
            str(row["model"] or "-"),
            row["location"],
            row["cost_basis"],
            status,
        )
    console.print(table)
