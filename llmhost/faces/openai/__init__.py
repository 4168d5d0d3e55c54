"""The OpenAI face: `/v1/chat/completions` (with the code agent loop), `/v1/completions`, `/v1/models`."""

from fastapi import FastAPI

from llmhost.server.errors import ErrorShapes

from . import chat, completions


def mount(app: FastAPI, shapes: ErrorShapes) -> None:
    """OpenAI's error shape is the default one: nothing to register."""
    app.include_router(chat.router)
    app.include_router(completions.router)
