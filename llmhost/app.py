"""The composition root: one FastAPI app around any `Engine`, every face mounted.

It sits above faces and server infrastructure: it builds the per-app resources once (the shared state
and generation service, the code sandbox, the HTTP client the code loop calls remote tool servers with),
closes them when the app stops, and lets each face mount its routes and register its error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from llmhost import __version__
from llmhost.config import Settings
from llmhost.engines.base import Engine
from llmhost.faces import anthropic as anthropic_face
from llmhost.faces import openai as openai_face
from llmhost.faces import ops, page, predict, rewards, simple, tokenizer, tools
from llmhost.faces import responses_api as responses_face
from llmhost.server.auth import ApiKeyMiddleware, load_api_keys
from llmhost.server.body_limit import BodyLimitMiddleware
from llmhost.server.errors import ErrorShapes, install_error_handlers
from llmhost.server.item_limit import BodyLimits
from llmhost.server.state import ServerState
from llmhost.tools.observation import ObservationService

log = logging.getLogger("llmhost.server")

# The page before predict: its `GET /` takes the requests that prefer HTML, predict's the rest.
FACES = (ops, openai_face, responses_face, anthropic_face, simple, page, predict, tools, rewards, tokenizer)
DOCS_ASSETS_URL = "/docs-assets"


def create_app(
    settings: Settings,
    engine: Engine,
    *,
    served_names: list[str],
    on_load_failure: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """Build the app. The engine loads in the background once the server runs, so `/health` can
    answer 503 while it loads instead of the port staying closed."""
    state = ServerState(
        settings=settings, engine=engine, served_names=served_names, on_load_failure=on_load_failure
    )
    state.has_explicit_names = bool(settings.served_model_name)
    # One sandbox for the whole app: `/get_observation` and the code loop share its slots and queue.
    observation = ObservationService(tools.sandbox_from_settings(settings))
    state.sandbox = observation.sandbox
    state.tool_http = httpx.AsyncClient()  # pooled connections to remote tool servers (the code loop)
    state.metrics.watch_sandbox(lambda: dict(observation.sandbox.outcomes))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(state.load())
        try:
            yield
        finally:
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            await engine.close()
            await state.tool_http.aclose()
            state.generation.close()

    # The API docs (/docs, /redoc) with their scripts served from the package: no CDN, so they work offline.
    app = FastAPIOffline(title="llmhost", version=__version__, lifespan=lifespan, static_url=DOCS_ASSETS_URL)
    app.state.llmhost = state
    app.state.observation_service = observation
    # Read by the faces' route class before FastAPI validates a body (server/item_limit.py).
    app.state.body_limits = BodyLimits(settings.max_messages)
    shapes = ErrorShapes()
    for face in FACES:
        face.mount(app, shapes)
    install_error_handlers(app, shapes)
    api_keys = load_api_keys(settings.api_key, settings.api_key_file)
    if api_keys:
        app.add_middleware(
            ApiKeyMiddleware, api_keys=api_keys, shapes=shapes, is_public=page.is_public_request
        )
    # Outside auth: an oversized body is refused before anything reads it, keys or not.
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=int(settings.max_request_body_mb * 2**20), shapes=shapes
    )
    if settings.allowed_origins:  # added last, so it wraps the rest: preflights and 401s carry CORS headers
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.allowed_origins, allow_methods=["*"], allow_headers=["*"]
        )
    return app
