"""What a JSON request body may hold, checked before FastAPI validates it on the event loop.

The event loop must keep serving (`/health`, other clients' streams) while a big body is handled, and
both of the costly steps hold the GIL: the C JSON parser for the whole document, pydantic for the whole
validation (about 100 ms per MiB of small objects, measured). So for a large body this route class:

- parses it on a worker thread with the pure-Python JSON scanner, which lets the GIL go every few
  milliseconds (strings are still scanned in C, so a long prompt parses fast); FastAPI then reads that
  parse back instead of parsing again;
- refuses, before validation, a body with more JSON objects and arrays than `max_containers`, and a
  conversation (the route's `limited_keys`, e.g. `messages`) longer than `--max-messages`.

Small bodies (the usual request) are parsed as before, on the loop, where they cost microseconds.
"""

from __future__ import annotations

import asyncio
import json
import json.scanner
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from llmhost.errors import InvalidRequest

OFF_LOOP_BYTES = 256 * 1024  # bodies from this size on are parsed on a worker thread
CONTAINERS_PER_MESSAGE = 16  # objects and arrays a message may bring (content parts, tool calls…)


@dataclass(frozen=True)
class BodyLimits:
    max_items: int  # entries of a conversation (--max-messages)

    @property
    def max_containers(self) -> int:
        return CONTAINERS_PER_MESSAGE * self.max_items + 1024


class ItemLimitRoute(APIRoute):
    """A route whose JSON body is checked against the app's `body_limits` (see the module docstring);
    `limited_keys` are the top-level lists that hold a conversation."""

    limited_keys: tuple[str, ...] = ("messages",)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            limits = getattr(request.app.state, "body_limits", None)  # None: an app without limits
            if limits is not None and request.method in ("POST", "PUT", "PATCH"):
                await _check_body(request, limits, self.limited_keys)
            return await handler(request)

        return route


async def _check_body(request: Request, limits: BodyLimits, keys: tuple[str, ...]) -> None:
    content_type = request.headers.get("content-type", "")
    if content_type and "json" not in content_type.lower():
        return  # FastAPI does not read it as JSON either
    body = await request.body()
    if len(body) < OFF_LOOP_BYTES:
        if b"[" not in body:
            return
        try:
            value = await request.json()  # parsed once: FastAPI reads the same parse back
        except (ValueError, RecursionError):  # FastAPI's own parse reports it in the face's shape
            return
    else:
        value, num_containers = await asyncio.to_thread(_parse_yielding, body)
        _check_conversations(value, limits, keys)  # the more telling error first
        if num_containers > limits.max_containers:
            raise InvalidRequest(
                f"the request body holds {num_containers} JSON objects and arrays; this server accepts at "
                f"most {limits.max_containers} ({CONTAINERS_PER_MESSAGE} per message of --max-messages)"
            )
        request._json = value  # noqa: SLF001 - Starlette's cache of `await request.json()`
        return
    _check_conversations(value, limits, keys)


def _check_conversations(value: Any, limits: BodyLimits, keys: tuple[str, ...]) -> None:
    if not isinstance(value, dict):
        return
    for key in keys:
        item = value.get(key)
        if isinstance(item, list) and len(item) > limits.max_items:
            raise InvalidRequest(
                f"'{key}' has {len(item)} entries; this server accepts at most {limits.max_items} "
                "(--max-messages)",
                param=key,
            )


def _parse_yielding(body: bytes) -> tuple[Any, int]:
    """The parsed body and its number of objects and arrays; errors as FastAPI words them."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "There was an error parsing the body") from None
    decoder = json.JSONDecoder()
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # Python-level: the GIL is released often
    try:
        value = decoder.decode(text)
    except json.JSONDecodeError as exc:
        error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error"}
        raise RequestValidationError([{**error, "input": {}, "ctx": {"error": exc.msg}}]) from None
    except RecursionError:
        raise InvalidRequest("the request body is nested too deeply") from None
    return value, _count_containers(value)


def _count_containers(value: Any) -> int:
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            count += 1
            stack.extend(item.values())
        elif isinstance(item, list):
            count += 1
            stack.extend(item)
    return count
