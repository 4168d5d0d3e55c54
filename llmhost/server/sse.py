"""Server-sent events, written once for every face.

Framing, keep-alive pings and client-disconnect handling come from sse-starlette: when the client
goes away the generator is cancelled, which closes the engine streams beneath it and frees their
sequences. An exception after the 200 has gone out becomes one last `data: {"error": …}` event.

Most faces send bare `data:` events; a face whose clients dispatch on the event's name (Anthropic's
Messages API: `event: message_start`…) yields `(name, data)` pairs and names its error event.
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

# One event: its already-encoded `data:` payload, or `(event name, payload)`.
Event = str | tuple[str, str]


def sse_response(
    events: AsyncIterator[Event],
    *,
    done: str | None = None,
    error_event: Callable[[BaseException], Any] | None = None,
    error_event_name: str | None = None,
    shutdown_grace_s: float,
) -> EventSourceResponse:
    """Stream `events`, then `done` if given. An error after the start is `error_event(exc)` (default:
    the OpenAI error body), sent as an event named `error_event_name` when there is one.

    On server shutdown (SIGTERM) a running stream gets `shutdown_grace_s` to finish before it is cut.
    """

    async def framed() -> AsyncIterator[bytes | dict[str, str]]:
        try:
            async for event in events:
                yield encode_event(event)
        except Exception as exc:
            status, body = describe(exc)
            if status >= 500:
                log.error("stream failed after it started: %s", exc)
            payload = error_event(exc) if error_event is not None else body
            frame = {"data": json.dumps(payload, ensure_ascii=False)}
            if error_event_name is not None:
                frame["event"] = error_event_name
            yield frame
        if done is not None:
            yield {"data": done}

    return EventSourceResponse(
        framed(), ping=PING_INTERVAL_S, sep="\n", shutdown_grace_period=shutdown_grace_s
    )


def encode_event(event: Event) -> bytes | dict[str, str]:
    """One event as the bytes sse-starlette sends as they are, or (for a payload that spans lines) the
    fields it frames itself, one `data:` line per line.

    Every streamed token is an event: building a `ServerSentEvent` for each cost the event loop more
    than the JSON encoding did. Payloads are single-line JSON, whose strings escape line breaks."""
    name, data = (None, event) if isinstance(event, str) else event
    if "\n" in data or "\r" in data or (name is not None and ("\n" in name or "\r" in name)):
        return {"data": data} if name is None else {"event": name, "data": data}
    head = "" if name is None else f"event: {name}\n"
    return f"{head}data: {data}\n\n".encode()
