"""API-key authentication as a pure ASGI middleware (no per-chunk overhead on streams).

Every route needs `Authorization: Bearer KEY`, or `x-api-key: KEY` (the header Anthropic's SDKs send),
except the probes an orchestrator calls without credentials (`/live`, `/health`, `/ready`) and what the
app names public (the chat page's own files: a browser must load them to ask for the key). A refusal is
a 401 in the error shape of the face the path belongs to, so each contract's existing clients can read it.
An accepted request carries an id of its key (`api_key_id`), so what a face keeps per client (stored
Responses) stays with the key that made it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from pathlib import Path

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from llmhost.server.errors import ErrorShapes, send_json

PUBLIC_PATHS = frozenset({"/live", "/health", "/ready"})
_KEY_ID = "llmhost_api_key_id"  # in the request's state


def load_api_keys(keys: Iterable[str], key_file: str | None) -> list[str]:
    """Keys from flags/env plus a file (one per line, `#` comments); blanks dropped."""
    found = [k.strip() for k in keys if k and k.strip()]
    if key_file:
        for line in Path(key_file).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                found.append(line)
    return found


class ApiKeyMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        api_keys: list[str],
        shapes: ErrorShapes,
        is_public: Callable[[Scope], bool] = lambda scope: False,
    ) -> None:
        self.app = app
        self._shapes = shapes
        self._keys = [k.encode() for k in api_keys]
        self._is_public = is_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        if self._is_public(scope) or self._is_authorized(scope):
            await self.app(scope, receive, send)
            return
        await self._refuse(scope, send)

    def _is_authorized(self, scope: Scope) -> bool:
        tokens = _presented_keys(scope)
        # Compare against every key (constant time each) so timing reveals neither key nor position.
        matched = None
        for token in tokens:
            for key in self._keys:
                if hmac.compare_digest(token, key):
                    matched = key
        if matched is None:
            return False
        # An id of the key, not the key: nothing downstream needs the secret itself.
        scope.setdefault("state", {})[_KEY_ID] = hashlib.sha256(matched).hexdigest()[:32]
        return True

    async def _refuse(self, scope: Scope, send: Send) -> None:
        message = "a valid API key is required: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
        body = self._shapes.body(scope["path"], message, "authentication_error", "invalid_api_key")
        await send_json(send, 401, body, (b"www-authenticate", b"Bearer"))


def api_key_id(request: Request) -> str | None:
    """An id of the API key the request was accepted with; None when the server has no keys."""
    return getattr(request.state, _KEY_ID, None)


def _presented_keys(scope: Scope) -> list[bytes]:
    """The keys a request presents: a bearer token and an `x-api-key` value (either may match)."""
    tokens = []
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                tokens.append(token.strip())
        elif name == b"x-api-key" and value.strip():
            tokens.append(value.strip())
    return tokens
