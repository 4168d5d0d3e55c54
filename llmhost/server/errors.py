"""One table from exception type to HTTP status and OpenAI-shaped error body.

Faces raise domain exceptions (`llmhost.errors`); nothing matches on message text. Request bodies that
fail validation, unreadable JSON and stray HTTP errors end up in the same shape:
`{"error": {"message", "type", "param", "code"}}`, unless the face the path belongs to registered its
own (`ErrorShapes`, filled as faces are mounted; routes of such faces use `shaped_route_class`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from llmhost.errors import (
    ClientDisconnected,
    ContextLengthExceeded,
    EngineError,
    InvalidRequest,
    LlmhostError,
    ModelLoadError,
    ModelNotFound,
    ModelNotLoaded,
    NotFound,
    QueueFull,
    RequestTimeout,
    SandboxUnavailable,
)
from llmhost.server.item_limit import ItemLimitRoute

log = logging.getLogger("llmhost.server")

# Most specific first: the first matching row wins.
ERROR_TABLE: list[tuple[type[LlmhostError], int, str]] = [
    (ContextLengthExceeded, 400, "invalid_request_error"),
    (InvalidRequest, 400, "invalid_request_error"),
    (ModelNotFound, 404, "not_found_error"),
    (NotFound, 404, "invalid_request_error"),  # OpenAI's type for an unknown response id
    (QueueFull, 429, "rate_limit_error"),
    (RequestTimeout, 504, "timeout_error"),
    (ClientDisconnected, 499, "client_closed_request"),  # nginx's code; nobody reads it
    (ModelNotLoaded, 503, "service_unavailable"),
    (SandboxUnavailable, 503, "service_unavailable"),
    (ModelLoadError, 503, "service_unavailable"),
    (EngineError, 500, "internal_server_error"),
]

_HTTP_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


Respond = Callable[[int, str, "dict[str, str] | None"], Response]


def detail_error_body(message: str) -> dict[str, Any]:
    """FastAPI's plain shape, which the predict harness and verl-tool clients read (§4, §5)."""
    return {"detail": message}


ErrorShape = Callable[[str], dict[str, Any]]


class ErrorShapes:
    """Which error body each path answers with when no route of a face handles the error (auth, an
    unknown path, a wrong method, a body too large). Faces register their paths and shapes when they
    are mounted; every other path gets OpenAI's shape."""

    def __init__(self) -> None:
        self._rules: list[tuple[Callable[[str], bool], ErrorShape]] = []

    def register(self, matches: Callable[[str], bool], shape: ErrorShape) -> None:
        self._rules.append((matches, shape))

    def body(self, path: str, message: str, type_: str, code: str | None = None) -> dict[str, Any]:
        for matches, shape in self._rules:
            if matches(path):
                return shape(message)
        return error_body(message, type_, None, code)


async def send_json(send: Send, status: int, body: dict[str, Any], *headers: tuple[bytes, bytes]) -> None:
    """Answer from an ASGI middleware (before any route runs): a JSON body and extra headers."""
    data = json.dumps(body).encode()
    start_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*start_headers, *headers]})
    await send({"type": "http.response.body", "body": data})


def responder(shape: Callable[[str], dict[str, Any]]) -> Respond:
    """`respond(status, message, headers)` answering in one face's error shape."""

    def respond(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return JSONResponse(shape(message), status_code=status, headers=headers)

    return respond


def error_body(message: str, type_: str, param: str | None = None, code: str | int | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def describe(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """Status and body for any exception (used for responses and for errors inside a stream)."""
    if isinstance(exc, LlmhostError):
        for cls, status, type_ in ERROR_TABLE:
            if isinstance(exc, cls):
                return status, error_body(exc.message, type_, exc.param, exc.code)
        return 500, error_body(exc.message, "internal_server_error", exc.param, exc.code)
    return 500, error_body("internal error", "internal_server_error")


# pydantic adds union-branch tags to error locations ("str", "list[TextPart]", "function-after[...]");
# they name types, not fields, so the reported `param` stops before the first one.
_TYPE_TAG = re.compile(r"^(str|int|float|bool|none|.*[\[\]-].*|[A-Z]\w*)$")


def error_headers(exc: BaseException) -> dict[str, str] | None:
    if isinstance(exc, QueueFull):
        return {"Retry-After": str(exc.retry_after_s)}
    return None


def _validation_param(loc: tuple[Any, ...]) -> str | None:
    parts: list[str] = []
    for p in loc:
        if p == "body" and not parts:
            continue
        if isinstance(p, str) and _TYPE_TAG.match(p):
            break
        parts.append(str(p))
    return ".".join(parts) if parts else None


def validation_message(exc: RequestValidationError) -> str:
    """One clear sentence about the first problem in a request body."""
    errors = exc.errors()
    return _validation_message(errors[0]) if errors else "invalid request"


def shaped_route_class(
    respond: Respond,
    *,
    validation_status: int = 400,
    describe_validation: Callable[[RequestValidationError, Request], str] | None = None,
    limited_keys: tuple[str, ...] = (),
) -> type[APIRoute]:
    """A route class whose every error — bad body, domain error, HTTP error, bug — is answered by
    `respond(status, message, headers)` in its face's own shape, leaving other faces' shapes alone."""
    limited_keys_ = limited_keys

    class ShapedRoute(ItemLimitRoute):
        limited_keys = limited_keys_  # conversations' messages: see ItemLimitRoute

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                try:
                    return await handler(request)
                except RequestValidationError as exc:
                    message = (
                        describe_validation(exc, request) if describe_validation else validation_message(exc)
                    )
                    return respond(validation_status, message, None)
                except LlmhostError as exc:
                    status, _ = describe(exc)
                    if status >= 500:
                        log.error("%s: %s", type(exc).__name__, exc.message)
                    return respond(status, exc.message, error_headers(exc))
                except StarletteHTTPException as exc:  # e.g. a body that is not UTF-8
                    return respond(exc.status_code, str(exc.detail), getattr(exc, "headers", None))
                except Exception:
                    log.exception("unhandled error in %s", request.url.path)
                    return respond(500, "internal error", None)

            return route

    return ShapedRoute


def _validation_message(err: dict[str, Any]) -> str:
    param = _validation_param(tuple(err.get("loc", ())))
    if err.get("type") == "json_invalid":
        return f"The request body is not valid JSON: {err.get('ctx', {}).get('error', err.get('msg'))}"
    if err.get("type") == "missing":
        return f"'{param}' is required"
    return f"'{param}': {err.get('msg')}" if param else str(err.get("msg"))


def install_error_handlers(app: FastAPI, shapes: ErrorShapes) -> None:
    @app.exception_handler(LlmhostError)
    async def _domain(_: Request, exc: LlmhostError) -> JSONResponse:
        status, body = describe(exc)
        if status >= 500:
            log.error("%s: %s", type(exc).__name__, exc.message)
        return JSONResponse(body, status_code=status, headers=error_headers(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        param = _validation_param(tuple(first.get("loc", ())))
        if first.get("type") == "json_invalid":
            param = None
        return JSONResponse(
            error_body(_validation_message(first), "invalid_request_error", param), status_code=400
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse(
            shapes.body(request.url.path, message, _HTTP_TYPES.get(exc.status_code, "error")),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body("internal error", "internal_server_error"), status_code=500)
