"""``duet serve``: the OpenAI-compatible server for self-hosted GGUF models."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import typer

from llmduet.cli.app import app, err_console, fail, friendly_errors, registry
from llmduet.engine.model import check_gguf
from llmduet.engine.quantize import FORMATS
from llmduet.models.llamacpp import bundled_model_path


def parse_models(values: list[str]) -> tuple[dict[str, Path | None], dict[str, str]]:
    """``NAME=PATH`` serves a file; ``NAME`` serves a registered llamacpp model. Returns
    the files and the registered models' own ``requantize`` settings."""
    if not values:
        values = ["llama"]
    models: dict[str, Path | None] = {}
    requantize: dict[str, str] = {}
    settings_models = None
    for value in values:
        name, sep, path = value.partition("=")
        name = name.strip()
        if not name:
            raise fail(f"--model '{value}': give NAME=PATH or a registered model name")
        if sep:
            models[name] = Path(path).expanduser()
            continue
        settings_models = settings_models or registry()
        spec = settings_models.spec(name)
        if spec.provider != "llamacpp":
            raise fail(
                f"--model {name}: only llamacpp models can be served (it is "
                f"'{spec.provider}'); use NAME=PATH for a GGUF file"
            )
        models[name] = Path(spec.path).expanduser() if spec.path else None
        if spec.requantize:
            requantize[name] = spec.requantize
    for model_path in models.values():
        check_gguf(model_path or bundled_model_path())
    return models, requantize


def ensure_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise fail(
                f"cannot listen on {host}:{port} ({exc.strerror}): pick another --port "
                "or stop what uses it"
            ) from None


@app.command("serve")
@friendly_errors
def serve_command(
    model: list[str] = typer.Option(
        None,
        "--model",
        "-m",
        help="NAME=PATH of a GGUF, or a registered llamacpp model "
        "(repeat to serve several; default: llama, the bundled SmolLM2)",
    ),
    host: str = typer.Option("127.0.0.1", help="address to bind (loopback by default)"),
    port: int = typer.Option(8000, min=0, max=65535),
    api_key: list[str] = typer.Option(
        None,
        "--api-key",
        help="require this Bearer key (repeatable; or DUET_API_KEYS, comma-separated)",
    ),
    max_concurrency: int = typer.Option(8, min=1, max=64, help="sequences decoded together"),
    queue: int = typer.Option(64, min=0, help="requests that may wait; beyond it: 429"),
    threads: int | None = typer.Option(None, min=1, help="llama.cpp threads (default: all)"),
    context: int = typer.Option(2048, min=64, help="context window per request, in tokens"),
    timeout: float = typer.Option(300.0, min=1, help="per-request time limit, seconds"),
    default_max_tokens: int | None = typer.Option(
        None, min=1, help="output limit for requests that set none (default: the window)"
    ),
    cors_origin: list[str] = typer.Option(None, "--cors-origin", help="allow this origin"),
    requantize: str | None = typer.Option(
        None,
        help="convert the GGUF once to q4_0 or q8_0 for faster batched decoding "
        "on CPUs whose kernels do not batch its format (cached under ~/.cache/llmduet)",
    ),
) -> None:
    """Serve GGUF models behind the OpenAI API (chat, tools, JSON, embeddings)."""
    from llmduet.serve import ServeConfig, create_app
    from llmduet.serve.server import GracefulServer

    keys = list(api_key or []) + [
        key.strip() for key in os.environ.get("DUET_API_KEYS", "").split(",") if key.strip()
    ]
    models, requantize_models = parse_models(list(model or []))
    config = ServeConfig(
        models=models,
        requantize_models=requantize_models,
        api_keys=keys,
        max_concurrency=max_concurrency,
        queue=queue,
        threads=threads,
        context=context,
        request_timeout_s=timeout,
        default_max_tokens=default_max_tokens,
        cors_origins=list(cors_origin or []),
        requantize=requantize,
    )
    if requantize and requantize not in FORMATS:
        raise fail(f"--requantize {requantize}: choose one of {', '.join(FORMATS)}")
    ensure_port_free(host, port)
    if host not in ("127.0.0.1", "localhost", "::1") and not keys:
        err_console.print(f"[yellow]warning:[/] serving on {host} without --api-key")
    err_console.print(
        f"serving {', '.join(config.models)} on http://{host}:{port}/v1 "
        f"(max {max_concurrency} concurrent, queue {queue})"
    )
    failures: list[str] = []

    def stop_on_load_error(reason: str) -> None:
        failures.append(reason)
        server.should_exit = True

    config.on_load_error = stop_on_load_error
    server = GracefulServer(create_app(config), host=host, port=port, log_level="warning")
    server.run()
    if failures:
        raise fail(f"cannot serve: {failures[0]}")
