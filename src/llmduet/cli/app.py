"""The Typer application, shared options and the one place errors become exit codes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from llmduet.config import load_settings
from llmduet.errors import DuetError
from llmduet.models.registry import ModelRegistry

app = typer.Typer(
    name="duet",
    help="Run LLM pipelines on ChatGPT and a self-hosted LLaMA side by side.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


class State:
    config: str | None = None


def registry() -> ModelRegistry:
    return ModelRegistry(load_settings(State.config))


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def friendly_errors(func: F) -> F:
    """Turn llmduet errors into one line on stderr and exit code 1; Ctrl-C into 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DuetError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(
    config: str | None = typer.Option(
        None, "--config", "-c", help="settings file (default: ./duet.toml or $DUET_CONFIG)"
    ),
) -> None:
    State.config = config
