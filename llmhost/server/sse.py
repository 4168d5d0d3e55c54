"""Server-sent events, written once for every face.

Framing, keep-alive pings and client-disconnect handling come from sse-starlette: when the client
goes away the generator is cancelled, which closes the engine streams beneath it and frees their
sequences. An exception after the 200 has gone out becomes one last `data: {"error": …}` event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from sse_starlette.sse import EventSourceResponse

from llmhost.server.errors import describe

log = logging.getLogger("llmhost.server")

PING_INTERVAL_S = 15.0


def sse_response(
    events: AsyncIterator[str],
    *,
    done: str | None = None,
    error_event: Callable[[BaseException], Any] | None = None,
    shutdown_grace_s: float,
) -> EventSourceResponse:
    """Stream `events` (each an already-encoded `data:` payload), then `done` if given.

    On server shutdown (SIGTERM) a running stream gets `shutdown_grace_s` to finish before it is cut.
    """

    async def framed() -> AsyncIterator[dict[str, str]]:
        try:
            async for data in events:
                yield {"data": data}
        except Exception as exc:
            status, body = describe(exc)
            if status >= 500:
                log.error("stream failed after it started: %s", exc)
            payload = error_event(exc) if error_event is not None else body
            yield {"data": json.dumps(payload, ensure_ascii=False)}
        if done is not None:
            yield {"data": done}

    return EventSourceResponse(
        framed(), ping=PING_INTERVAL_S, sep="\n", shutdown_grace_period=shutdown_grace_s
    )
