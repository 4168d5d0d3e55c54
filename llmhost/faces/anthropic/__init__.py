"""The Anthropic face: `/v1/messages` and `/v1/messages/count_tokens` (Claude Code, the `anthropic` SDKs).

The `anthropic-version` and `anthropic-beta` headers and `?beta=true` are accepted and change nothing;
the API key may come as `x-api-key` (server/auth.py). Errors answer in Anthropic's shape,
`{"type": "error", "error": {"type", "message"}}`, wherever they arise on these paths.
"""

from fastapi import FastAPI

from llmhost.server.errors import ErrorShapes

from . import messages
from .responses import error_body


def mount(app: FastAPI, shapes: ErrorShapes) -> None:
    app.include_router(messages.router)
    # Errors no route handles (a bad key, a body too large, a wrong method): the shape has only the
    # message to go by, so their type is `invalid_request_error` whatever the status.
    shapes.register(messages.is_messages_path, error_body)
