"""The OpenAI Responses API face: `POST /v1/responses`, `GET` and `DELETE /v1/responses/{id}` (Codex CLI,
the `openai` SDK's `client.responses`). Errors answer in OpenAI's shape, the default one.

Not to be confused with `faces/openai/responses.py`, the chat face's typed response models.
"""

from fastapi import FastAPI

from llmhost.server.errors import ErrorShapes

from . import routes
from .store import ResponseStore


def mount(app: FastAPI, shapes: ErrorShapes) -> None:
    settings = app.state.llmhost.settings
    app.state.responses_store = ResponseStore(
        max_items=settings.responses_store_max_items,
        max_bytes=int(settings.responses_store_max_mb * 2**20),
    )
    app.include_router(routes.router)
