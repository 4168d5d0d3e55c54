"""`llmhost` command line. Heavy imports happen inside commands so `llmhost --help` stays instant."""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

import typer

from llmhost.cli.options import with_settings_options

app = typer.Typer(
    name="llmhost",
    help="Load a model once, with the fastest engine that works, and serve every LLM contract.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """llmhost: one server for the OpenAI API and the contracts your team's clients expect."""


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
@with_settings_options
def serve(**options: Any) -> None:
    """Serve a model (default: the embedded SmolLM2-135M-Instruct) over every API face."""
    from pydantic import ValidationError

    from llmhost.config import Settings

    config = options.pop("config", None)
    try:
        settings = Settings.load(config, **options)
    except (ValidationError, FileNotFoundError) as exc:
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc
    _configure_logging(settings.log_level)
    sys.exit(run_server(settings))


def run_server(settings: Any) -> int:
    import uvicorn

    from llmhost.engines.registry import create_engine
    from llmhost.errors import ModelLoadError
    from llmhost.models.source import resolve_model
    from llmhost.server.app import create_app

    log = logging.getLogger("llmhost")
    try:
        source = resolve_model(settings.model)
        names = settings.served_model_name or [source.default_name]
        engine = create_engine(settings, source, names[0])
    except ModelLoadError as exc:
        log.error("%s", exc)
        return 1

    failed: list[BaseException] = []

    def on_load_failure(exc: BaseException) -> None:
        # A server that cannot generate must not pretend to be up: stop and exit non-zero.
        failed.append(exc)
        os.kill(os.getpid(), signal.SIGTERM)

    fastapi_app = create_app(settings, engine, served_names=names, on_load_failure=on_load_failure)
    log.info("serving '%s' on http://%s:%d", names[0], settings.host, settings.port)
    uvicorn.run(
        fastapi_app,
        host=settings.host,
        port=settings.port,
        log_level="warning" if settings.log_level == "info" else settings.log_level,
        timeout_graceful_shutdown=5,
    )
    return 1 if failed else 0


def main() -> None:
    app()


if __name__ == "__main__":
    main()
