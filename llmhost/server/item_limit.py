"""A conversation with more messages than `--max-messages` is a 400 before its body is validated.

Pydantic spends about 5 µs per message on the event loop, so a body of 100,000 short messages would
hold every other client (and `/health`) for half a second before any limit in the pipeline could see it.
JSON parsing itself stays on the loop (about 35 ms per MiB of small objects); `--max-request-body-mb`
bounds it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from llmhost.errors import InvalidRequest


class ItemLimitRoute(APIRoute):
    """A route whose JSON body's top-level `limited_keys` lists (a conversation's messages) may not be
    longer than the app's `max_body_items`."""

    limited_keys: tuple[str, ...] = ("messages",)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            limit = getattr(request.app.state, "max_body_items", None)  # None: an app without the limit
            if limit is not None and request.method in ("POST", "PUT", "PATCH"):
                await _check_items(request, limit, self.limited_keys)
            return await handler(request)

        return route


async def _check_items(request: Request, limit: int, keys: tuple[str, ...]) -> None:
    body = await request.body()
    if not body or b"[" not in body:
        return
    try:
        value = await request.json()  # parsed once: FastAPI reads the same parse back
    except ValueError:  # not JSON (or not UTF-8): FastAPI's own parse reports it in the face's shape
        return
    except RecursionError:
        raise InvalidRequest("the request body is nested too deeply") from None
    if not isinstance(value, dict):
        return
    for key in keys:
        item = value.get(key)
        if isinstance(item, list) and len(item) > limit:
            raise InvalidRequest(
                f"'{key}' has {len(item)} entries; this server accepts at most {limit} (--max-messages)",
                param=key,
            )
