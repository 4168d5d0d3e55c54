"""`llmhost tool-server`: serve only verl-tool's `POST /get_observation` (no model is loaded).

Its flags are the `Settings` fields it uses, with the same help text, env vars and config keys as
`llmhost serve` (precedence: flag > environment > `--config` file > default).
"""

from __future__ import annotations

import logging
from typing import Any

from llmhost.cli.options import configure_logging, load_settings, with_settings_options

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


@with_settings_options(fields=_FIELDS)
def tool_server(**options: Any) -> None:
    """Serve the code tool (verl-tool `/get_observation`) alone, backed by the Python sandbox."""
    import typer
    import uvicorn

    from llmhost.cli.startup import StartupError, bind_listeners
    from llmhost.faces.tools import create_tool_app

    settings = load_settings(options)
    configure_logging(settings.log_level)
    log = logging.getLogger("llmhost")
    try:  # bound before anything else, so a busy port is one line naming --port, as for `serve`
        sockets = bind_listeners(settings.host, settings.port)
    except StartupError as exc:
        log.error("%s", exc)
        raise typer.Exit(1) from None
    port = sockets[0].getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_tool_app(settings),
            log_level="warning" if settings.log_level == "info" else settings.log_level,
        )
    )
    log.info("tool server on http://%s:%d/get_observation", settings.host, port)
    try:
        server.run(sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()
