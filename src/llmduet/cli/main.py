"""Entry point of the ``duet`` command: importing the command modules registers them."""

from llmduet.cli import ask, chat, models, rag, serve  # noqa: F401
from llmduet.cli.app import app


def run() -> None:
    app()


if __name__ == "__main__":
    run()
