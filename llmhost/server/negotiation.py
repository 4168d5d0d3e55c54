"""Content negotiation: does a request come from a browser (wants HTML) or from an API client?"""

from __future__ import annotations

from starlette.types import Scope


def prefers_html(accept: str) -> bool:
    """True when the Accept header ranks text/html at least as high as JSON (a browser, not an API
    client: curl, httpx and requests send `*/*`)."""
    weights: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        weight = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if media:
            weights[media.lower()] = max(weight, weights.get(media.lower(), 0.0))
    html = weights.get("text/html", 0.0)
    return html > 0 and html >= weights.get("application/json", 0.0)


def accept_header(scope: Scope) -> str:
    """The request's Accept header, for code that runs on the raw ASGI scope (middleware, route matching)."""
    for name, value in scope.get("headers", ()):
        if name == b"accept":
            return value.decode("latin-1")
    return ""
