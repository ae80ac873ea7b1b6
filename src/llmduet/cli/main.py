"""Entry point of the ``duet`` command: importing the command modules registers them."""

import sys

import typer

from llmduet.cli import agents, ask, audit, bench, chat, eval, gateway, models, rag, serve  # noqa: F401
from llmduet.cli.app import app, err_console, fail

try:  # typer >= 0.25 vendors click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - older typer on real click
    from click.exceptions import ClickException, NoArgsIsHelpError  # type: ignore[assignment]


def run() -> None:
    """Run the CLI; a usage error (bad option value, unknown option) is one line on
    stderr with exit code 2, like every other error, instead of a boxed usage panel."""
    command = typer.main.get_command(app)
    try:
        code = command.main(prog_name="duet", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        exc.show()
        code = 0
    except ClickException as exc:
        context = getattr(exc, "ctx", None)
        hint = f" (see '{context.command_path} --help')" if context else ""
        fail(f"{exc.format_message()}{hint}")

        code = exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    run()
