"""A request-body limit as a pure ASGI middleware: an oversized body is a 413 before it is read whole.

A body with a `Content-Length` over the limit is refused from its headers alone; a chunked body (no
length) is read up to the limit and refused as soon as it passes it; one under the limit is handed on as
it was received. The 413 is in the error shape of the face the path belongs to.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmhost.server.errors import ErrorShapes, send_json


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int, shapes: ErrorShapes) -> None:
        self.app = app
        self._max_bytes = max_bytes
        self._shapes = shapes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None:
            if length > self._max_bytes:
                await self._refuse(scope, send, length)
                return
            await self.app(scope, receive, send)
            return
        # No declared length: read (at most the limit) first, then replay what came.
        messages: list[Message] = []
        num_bytes = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            num_bytes += len(message.get("body", b""))
            if num_bytes > self._max_bytes:
                await self._refuse(scope, send, None)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send, length: int | None) -> None:
        limit_mib = self._max_bytes / 2**20
        size = f" ({length / 2**20:.1f} MiB)" if length is not None else ""
        message = (
            f"the request body{size} is larger than this server accepts ({limit_mib:g} MiB; the operator "
            "sets it with --max-request-body-mb)"
        )
        body = self._shapes.body(scope["path"], message, "invalid_request_error", "request_too_large")
        await send_json(send, 413, body, (b"connection", b"close"))  # the rest of the body is never read


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
