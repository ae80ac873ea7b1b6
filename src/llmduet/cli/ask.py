"""``duet ask``: one prompt on several models at once, streamed side by side."""

from __future__ import annotations

import asyncio
import json

import typer
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from llmduet.cli.app import app, console, fail, friendly_errors, registry
from llmduet.models.side_by_side import EventSink, Outcome, run_side_by_side
from llmduet.models.types import ChatEvent, ChatRequest, TextDelta, ToolCallDelta

DEFAULT_MODELS = ["llama", "chatgpt"]


class SideBySideView:
    """One live pane per model, updated as tokens arrive."""

    def __init__(self, names: list[str]) -> None:
        self.texts = {name: Text() for name in names}
        self.status = dict.fromkeys(names, "waiting")

    def on_event(self, name: str, event: ChatEvent) -> None:
        if isinstance(event, TextDelta):
            self.texts[name].append(event.text)
            self.status[name] = "streaming"
        elif isinstance(event, ToolCallDelta):
            self.texts[name].append(
                f"[tool call {event.name}] " if event.name else event.arguments, style="cyan"
            )

    def finish(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.skipped:
                self.status[outcome.model] = "skipped"
                self.texts[outcome.model] = Text(f"skipped: {outcome.error}", style="yellow")
            elif outcome.error:
                self.status[outcome.model] = "error"
                self.texts[outcome.model].append(f"\nerror: {outcome.error}", style="red")
            else:
                self.status[outcome.model] = "done"

    def __rich__(self) -> Table:
        grid = Table.grid(expand=True, padding=(0, 1))
        for _ in self.texts:
            grid.add_column(ratio=1)
        grid.add_row(
            *(
                Panel(text, title=f"[bold]{escape(name)}[/]", subtitle=self.status[name])
                for name, text in self.texts.items()
            )
        )
        return grid


def summary_table(outcomes: list[Outcome]) -> Table:
    table = Table(title="Side by side")
    for column, justify in [
        ("model", "left"),
        ("where", "left"),
        ("TTFT ms", "right"),
        ("tokens/s", "right"),
        ("output tokens", "right"),
        ("total ms", "right"),
        ("cost USD", "right"),
        ("status", "left"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for outcome in outcomes:
        row = outcome.to_dict()
        status = "ok" if outcome.ok else ("skipped" if outcome.skipped else "error")

        def num(value: float | None, digits: int = 1) -> str:
            return "-" if value is None else f"{value:,.{digits}f}"

        cost = row["cost_usd"]
        table.add_row(
            outcome.model,
            outcome.location,
            num(row["ttft_ms"]),
            num(row["tokens_per_s"]),
            str(row["output_tokens"]) if outcome.ok else "-",
            num(row["total_ms"], 0),
            "-" if cost is None else f"${cost:.6f}",
            status,
        )
    return table


def require_an_answer(outcomes: list[Outcome]) -> None:
    """Exit non-zero, with every model's reason, when no model answered."""
    if not any(outcome.ok for outcome in outcomes):
        reasons = "; ".join(f"{o.model}: {o.error}" for o in outcomes)
        raise fail(f"no model produced an answer ({reasons})")


@app.command("ask")
@friendly_errors
def ask_command(
    prompt: str = typer.Argument(..., help="the prompt"),
    model: list[str] = typer.Option(
        None, "--model", "-m", help="model to run (repeat for several; default: llama, chatgpt)"
    ),
    system: str | None = typer.Option(None, "--system", "-s", help="system message"),
    temperature: float | None = typer.Option(None, min=0.0, max=2.0, help="0 to 2"),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=1, help="output limit"),
    seed: int | None = typer.Option(None, help="sampling seed, for repeatable output"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per model"),
) -> None:
    """Run PROMPT on every named model concurrently and compare them."""
    if not prompt.strip():
        raise fail('the prompt is empty: pass some text, e.g. duet ask "Hello"')
    names = list(dict.fromkeys(name.lower() for name in (model or DEFAULT_MODELS)))
    models = registry()
    for name in names:  # an unknown name fails here, before any pane is drawn
        models.spec(name)
    request = ChatRequest.from_prompt(
        prompt, system=system, temperature=temperature, max_tokens=max_tokens, seed=seed
    )

    async def run_all(on_event: EventSink | None) -> list[Outcome]:
        try:
            return await run_side_by_side(models, names, request, on_event)
        finally:
            await models.aclose()

    if as_json:
        outcomes = asyncio.run(run_all(None))
        for outcome in outcomes:
            print(json.dumps(outcome.to_dict()))
    else:
        view = SideBySideView(names)
        with Live(view, console=console, refresh_per_second=12, transient=False) as live:
            outcomes = asyncio.run(run_all(view.on_event))
            view.finish(outcomes)
            live.refresh()
        if not console.is_terminal:
            console.print()
        console.print(summary_table(outcomes))
    require_an_answer(outcomes)
