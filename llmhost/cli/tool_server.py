"""`llmhost tool-server`: serve only verl-tool's `POST /get_observation` (no model is loaded).

Its flags are the `Settings` fields it uses, with the same help text, env vars and config keys as
`llmhost serve` (precedence: flag > environment > `--config` file > default).
"""

from __future__ import annotations

import inspect
import logging
import sys
from typing import Any

import typer

from llmhost.cli.options import _option
from llmhost.config import Settings

_FIELDS = (
    "host",
    "port",
    "sandbox",
    "sandbox_timeout_s",
    "sandbox_max_output_bytes",
    "sandbox_max_concurrency",
    "sandbox_max_queue",
    "log_level",
)


def tool_server(**options: Any) -> None:
    """Serve the code tool (verl-tool `/get_observation`) alone, backed by the Python sandbox."""
    import uvicorn
    from pydantic import ValidationError

    from llmhost.faces.tools import create_tool_app

    config = options.pop("config", None)
    try:
        settings = Settings.load(config, **options)
    except (ValidationError, FileNotFoundError) as exc:
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(sys.stderr)],
    )
    logging.getLogger("llmhost").info(
        "tool server on http://%s:%d/get_observation", settings.host, settings.port
    )
    uvicorn.run(
        create_tool_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning" if settings.log_level == "info" else settings.log_level,
    )


tool_server.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(None, "--config", help="YAML file with settings keys."),
            annotation=str | None,
        ),
        *(_option(name, Settings.model_fields[name]) for name in _FIELDS),
    ]
)
