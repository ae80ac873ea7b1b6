"""``duet agents run`` streams a team at work; ``duet agents compare`` runs it all-local,
all-API and hybrid and compares steps, tokens, cost, time and data sent out."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from llmduet.cli.app import app, console, fail, friendly_errors, registry
from llmduet.errors import ConfigError, DuetError

if TYPE_CHECKING:
    from llmduet.agents.runner import TeamRunner
    from llmduet.agents.team import TeamSpec
    from llmduet.models.registry import ModelRegistry

agents_app = typer.Typer(help="Multi-agent teams on both models.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")

TEAM_OPTION = typer.Option(
    "research", "--team", help="a team file, or a shipped team: research, review"
)
INDEX_OPTION = typer.Option(
    Path(".duet/index"), "--index", help="the index the search_documents tool reads"
)


def team_path(team: str) -> Path:
    from llmduet.data import TEAMS

    shipped = TEAMS / f"{team}.toml"
    return (
        shipped
        if "/" not in team and not team.endswith(".toml") and shipped.exists()
        else Path(team)
    )


def prepared(team: TeamSpec, models: ModelRegistry, index: Path, max_tokens: int) -> TeamRunner:
    """The runner, after every check that can fail before a model is called."""
    from llmduet.agents.builtin_tools import calculator_tool, datetime_tool, rag_search_tool
    from llmduet.agents.runner import TeamRunner
    from llmduet.agents.team import check_team
    from llmduet.rag.index import MANIFEST

    tools = {"calculator": calculator_tool(), "current_datetime": datetime_tool()}
    if (index / MANIFEST).exists():
        tools["search_documents"] = rag_search_tool(index)
    needs_index = any("search_documents" in a.tools for a in team.agents.values())
    if needs_index and "search_documents" not in tools:
        raise ConfigError(
            f"team '{team.name}' searches documents but there is no index at {index}: "
            f"run `duet rag ingest PATH --index {index}` or pass --index"
        )
    check_team(team, tools, lambda model: models.backend(model).location)
    for agent in team.agents.values():
        readiness = models.backend(agent.model).readiness()
        if not readiness.ready:
            raise ConfigError(
                f"agent {agent.name}: model '{agent.model}' cannot run: {readiness.reason}"
            )
    return TeamRunner(team, models.backend, tools, max_tokens_per_call=max_tokens)


def show(event: dict[str, Any]) -> None:
    """One event in the terminal: a header per step, tokens inline, tools and hand-offs."""
    kind = event["event"]
    if kind == "step_start":
        console.print(
            f"\n[bold]{escape(event['agent'])}[/] [dim]({escape(event['model'])}, "
            f"{event['location']})[/]"
        )
    elif kind == "token":
        console.print(escape(event["text"]), end="", soft_wrap=True, highlight=False)
    elif kind == "tool_call":
        console.print(f"\n  [cyan]→ {escape(event['name'])}[/]({escape(event['arguments'])})")
    elif kind == "tool_result":
        colour = "red" if event["error"] else "green"
        console.print(f"  [{colour}]← {escape(event['content'][:300])}[/]")
    elif kind == "handoff":
        console.print(
            f"\n[magenta]hand-off {escape(event['source'])} → {escape(event['target'])}[/]"
        )


@agents_app.command("run")
@friendly_errors
def run_command(
    task: str = typer.Argument(..., help="what the team should do"),
    team: str = TEAM_OPTION,
    index: Path = INDEX_OPTION,
    max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="output limit per call"),
    as_json: bool = typer.Option(False, "--json", help="one JSON event per line"),
) -> None:
    """Run a team on TASK, streaming tokens, tool calls, results and hand-offs."""
    from llmduet.agents.team import load_team

    if not task.strip():
        raise fail("the task is empty")
    spec = load_team(team_path(team))
    models = registry()
    runner = prepared(spec, models, index, max_tokens)
    state: dict[str, Any] = {}

    async def go() -> None:
        try:
            async for event in runner.events(task):
                if as_json:
                    print(json.dumps(event), flush=True)
                else:
                    show(event)
                state["last"] = event
        finally:
            await models.aclose()

    asyncio.run(go())
    final = state["last"]
    if not as_json:
        console.print(f"\n\n[bold]answer[/] ({escape(final['status'])}): {escape(final['answer'])}")
        console.print(steps_table(final))


def steps_table(final: dict[str, Any]) -> Table:
    table = Table(title="Steps")
    for column in (
        "#",
        "agent",
        "model",
        "where",
        "tokens in/out",
        "TTFT ms",
        "total ms",
        "cost $",
    ):
        table.add_column(column)
    for number, step in enumerate(final["steps"], 1):
        table.add_row(
            str(number),
            escape(step["agent"]),
            escape(step["model"]),
            step["location"],
            f"{step['prompt_tokens']}/{step['output_tokens']}",
            str(step["ttft_ms"]),
            str(step["total_ms"]),
            f"{step['cost_usd']:.6f}" if step["cost_usd"] is not None else "-",
        )
    return table


def variant(spec: TeamSpec, name: str, local: str, api: str) -> TeamSpec:
    """all-local / all-api: every agent on one model; hybrid: agents that see private
    data on the local model, the others on the API model; declared: as in the file."""
    if name == "declared":
        return spec
    if name == "all-local":
        return spec.with_models({agent: local for agent in spec.agents})
    if name == "all-api":
        return spec.with_models({agent: api for agent in spec.agents})
    if name == "hybrid":
        return spec.with_models({a.name: local if a.private else api for a in spec.agents.values()})
    raise fail(f"--variants: unknown variant '{name}': choose all-local, all-api, hybrid, declared")


@agents_app.command("compare")
@friendly_errors
def compare_command(
    task: str = typer.Argument(..., help="what the team should do"),
    team: str = TEAM_OPTION,
    variants: str = typer.Option(
        "all-local,all-api,hybrid", help="comma-separated: all-local, all-api, hybrid, declared"
    ),
    local_model: str = typer.Option("llama", help="the model of the all-local variant"),
    api_model: str = typer.Option("chatgpt", help="the model of the all-api variant"),
    index: Path = INDEX_OPTION,
    max_tokens: int = typer.Option(256, "--max-tokens", min=1),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per variant"),
) -> None:
    """Run the same team with every agent local, every agent on the API, and as declared."""
    from llmduet.agents.team import load_team

    spec = load_team(team_path(team))
    models = registry()
    names = [v.strip() for v in variants.split(",") if v.strip()]
    for name in names:
        variant(spec, name, local_model, api_model)  # an unknown variant fails before any run
    rows: list[dict[str, Any]] = []
    for name in names:
        chosen = variant(spec, name, local_model, api_model)
        try:
            runner = prepared(chosen, models, index, max_tokens)
        except DuetError as exc:  # e.g. all-api with a private agent, or no key
            rows.append({"variant": name, "skipped": str(exc)})
            continue
        started = time.perf_counter()

        async def go(runner: TeamRunner = runner) -> dict[str, Any]:
            last: dict[str, Any] = {}
            async for event in runner.events(task):
                last = event
            return last

        final = asyncio.run(go())
        rows.append(
            {
                "variant": name,
                "status": final["status"],
                "steps": len(final["steps"]),
                "tool_calls": final["tool_calls"],
                "tokens": final["tokens"],
                "cost_usd": final["cost_usd"],
                "wall_s": round(time.perf_counter() - started, 3),
                "external_prompt_bytes": final["external_prompt_bytes"],
                "answer": final["answer"],
            }
        )
    asyncio.run(models.aclose())
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    table = Table(title=f"team {escape(spec.name)}: {escape(task)}")
    for column in ("variant", "status", "steps", "tool calls", "tokens", "cost $", "wall s",
                   "bytes sent out", "answer"):  # fmt: skip
        table.add_column(column)
    for row in rows:
        if "skipped" in row:
            table.add_row(
                row["variant"], "[yellow]skipped[/]", "", "", "", "", "", "", escape(row["skipped"])
            )
            continue
        table.add_row(
            row["variant"], escape(row["status"]), str(row["steps"]), str(row["tool_calls"]),
            str(row["tokens"]), f"{row['cost_usd']:.6f}", f"{row['wall_s']:.2f}",
            str(row["external_prompt_bytes"]), escape(row["answer"][:200]),
        )  # fmt: skip
    console.print(table)
    if all("skipped" in row for row in rows):
        raise fail("no variant could run")
