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
    import uvicorn

    from llmhost.faces.tools import create_tool_app

    settings = load_settings(options)
    configure_logging(settings.log_level)
    logging.getLogger("llmhost").info(
        "tool server on http://%s:%d/get_observation", settings.host, settings.port
    )
    uvicorn.run(
        create_tool_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning" if settings.log_level == "info" else settings.log_level,
    )
