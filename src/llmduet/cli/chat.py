"""``duet chat``: an interactive streaming conversation that can switch models."""

from __future__ import annotations

import asyncio

import typer
from rich.markup import escape

from llmduet.cli.app import app, console, friendly_errors, registry
from llmduet.errors import DuetError
from llmduet.models.registry import ModelRegistry
from llmduet.models.types import ChatEvent, ChatRequest, Message, TextDelta

HELP = "commands: /model NAME (switch model), /reset (forget history), /exit"


def _print_delta(event: ChatEvent) -> None:
    if isinstance(event, TextDelta):
        console.print(event.text, end="", markup=False, highlight=False, soft_wrap=True)


async def _turn(
    models: ModelRegistry, name: str, history: list[Message], request_options: dict
) -> str | None:
    backend = models.backend(name)
    readiness = backend.readiness()
    if not readiness.ready:
        console.print(f"[yellow]{escape(name)} cannot run: {escape(readiness.reason)}[/]")
        return None
    await backend.prepare()
    console.print(f"[bold]{name}>[/] ", end="")
    try:
        result = await backend.complete(
            ChatRequest(messages=history, **request_options), _print_delta
        )
    except DuetError as exc:
        console.print(f"\n[red]error: {escape(str(exc))}[/]")
        return None
    ttft = result.ttft_s
    stats = f"{result.output_tokens} tokens, {result.tokens_per_s or 0:.1f} tok/s"
    if ttft is not None:
        stats += f", TTFT {ttft * 1000:.0f} ms"
    console.print(f"\n[dim]({stats})[/]")
    return result.text


async def _loop(models: ModelRegistry, name: str, system: str | None, options: dict) -> None:
    history: list[Message] = [{"role": "system", "content": system}] if system else []
    console.print(f"[dim]chatting with {name}; {HELP}[/]")
    try:
        while True:
            try:
                line = await asyncio.to_thread(input, "you> ")
            except EOFError:
                console.print()
                return
            text = line.strip()
            if not text:
                continue
            if text in ("/exit", "/quit"):
                return
            if text == "/reset":
                history = history[:1] if system else []
                console.print("[dim]history cleared[/]")
                continue
            if text.startswith("/model"):
                wanted = text.removeprefix("/model").strip()
                if not wanted:
                    console.print(
                        f"[dim]current model: {name}; registered: {', '.join(models.names())}[/]"
                    )
                    continue
                try:
                    models.spec(wanted)
                except DuetError as exc:
                    console.print(f"[red]{escape(str(exc))}[/]")
                    continue
                name = wanted.lower()
                console.print(f"[dim]now chatting with {name} (history kept)[/]")
                continue
            if text.startswith("/"):
                console.print(f"[yellow]unknown command {escape(text.split()[0])}; {HELP}[/]")
                continue
            history.append({"role": "user", "content": text})
            answer = await _turn(models, name, history, options)
            if answer is None:
                history.pop()  # keep the history consistent: drop the unanswered turn
            else:
                history.append({"role": "assistant", "content": answer})
    finally:
        await models.aclose()


@app.command("chat")
@friendly_errors
def chat_command(
    model: str = typer.Option("llama", "--model", "-m", help="model to chat with"),
    system: str | None = typer.Option(None, "--system", "-s", help="system message"),
    temperature: float | None = typer.Option(None, min=0.0, max=2.0),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=1),
    seed: int | None = typer.Option(None),
) -> None:
    """Interactive streaming chat with history; /model NAME switches model."""
    models = registry()
    models.spec(model)
    options = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}
    asyncio.run(_loop(models, model.lower(), system, options))
