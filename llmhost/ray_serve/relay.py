"""An HTTP request carried from the ingress to a replica, and the app's answer carried back, as ASGI
messages: the replica runs its unchanged FastAPI app on the request and yields what the app sends.

Nothing here imports Ray: the ingress and the replica (deployments.py) move these objects through a
deployment handle, and tests drive `run_app` against an app directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("llmhost.ray_serve")

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]

# The parts of an HTTP scope a replica's app reads; the rest (the ingress server's own state and
# extensions) stays behind.
_SCOPE_KEYS = (
    "type", "asgi", "http_version", "method", "scheme", "path", "raw_path", "root_path", "query_string",
    "headers", "server", "client",
)  # fmt: skip


@dataclass
class RelayedRequest:
    """One HTTP request as the ingress read it: its scope, its whole body, and where it would rather go."""

    scope: dict[str, Any]
    body: bytes
    affinity_key: str | None = None  # routing.affinity_key
    pinned_replica: str | None = None  # a replica id asked for by name (x-llmhost-replica)

    @classmethod
    def from_scope(cls, scope: dict[str, Any], body: bytes, **routing: Any) -> RelayedRequest:
        return cls({k: scope[k] for k in _SCOPE_KEYS if k in scope}, body, **routing)


class ResponseCut(Exception):
    """The app failed after its response had started: the client must see the response end abnormally."""


async def read_body(receive: Receive, max_bytes: int) -> tuple[bytes, bool]:
    """The request body, and whether the client is still there. Reading stops past `max_bytes`: the
    replica's body limit then refuses the request (413) in its face's shape without the rest being held."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes or not message.get("more_body", False):
            return b"".join(chunks), True


def is_final(message: Message) -> bool:
    return message["type"] == "http.response.body" and not message.get("more_body", False)


def coalesce(messages: list[Message]) -> list[Message]:
    """Consecutive body messages as one: every message crosses each hop as its own item, and a stream's
    events (one message each) queue up whenever the app writes faster than the hops carry them."""
    merged: list[Message] = []
    for message in messages:
        previous = merged[-1] if merged else None
        if message["type"] == "http.response.body" and previous and previous["type"] == "http.response.body":
            merged[-1] = {**message, "body": previous.get("body", b"") + message.get("body", b"")}
        else:
            merged.append(message)
    return merged


async def run_app(
    app: ASGIApp, request: RelayedRequest, *, extra_headers: list[tuple[bytes, bytes]] = ()
) -> AsyncIterator[list[Message]]:
    """Run `app` on `request`, yielding the messages it sends, in batches (whatever queued up while the
    previous batch was on its way). `extra_headers` are added to the response's headers.

    When the consumer stops early (the client went away, so the ingress cancelled the call), the app's
    `receive()` answers `http.disconnect` — streams stop as they would behind uvicorn — and the app is
    cancelled if it does not stop by itself. A failure after the response started raises `ResponseCut`.
    """
    queue: asyncio.Queue[Message | None] = asyncio.Queue()  # None: the app returned or failed
    disconnected = asyncio.Event()
    body_pending = True

    async def receive() -> Message:
        nonlocal body_pending
        if body_pending:
            body_pending = False
            return {"type": "http.request", "body": request.body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start" and extra_headers:
            message = {**message, "headers": [*message.get("headers", ()), *extra_headers]}
        queue.put_nowait(message)

    async def run() -> None:
        try:
            await app({**request.scope, "state": {}}, receive, send)
        finally:
            queue.put_nowait(None)

    task = asyncio.create_task(run())
    is_started = is_complete = False
    try:
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            is_done = batch[-1] is None
            messages = coalesce([m for m in batch if m is not None])
            if messages:
                is_started = True
                is_complete = is_complete or any(is_final(m) for m in messages)
                yield messages
            if is_done:
                break
        await _outcome(task, is_started=is_started, is_complete=is_complete)
    finally:
        disconnected.set()
        if not task.done():
            await _stop(task)


async def _outcome(task: asyncio.Task, *, is_started: bool, is_complete: bool) -> None:
    try:
        await task
    except Exception as exc:
        # Starlette's error middleware has answered a 500 before re-raising: that answer is complete.
        if is_complete:
            log.error("the app failed after answering: %s: %s", type(exc).__name__, exc)
            return
        raise ResponseCut(f"{type(exc).__name__}: {exc}" if is_started else "no response") from exc
    if not is_complete:
        raise ResponseCut("the app returned without finishing its response")


async def _stop(task: asyncio.Task, grace_s: float = 1.0) -> None:
    """Let the app notice the disconnect and stop; cancel it if it has not after `grace_s`."""
    with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
        await asyncio.wait_for(asyncio.shield(task), grace_s)
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
