"""The app factory: one FastAPI app, every face mounted, around any `Engine`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from llmhost import __version__
from llmhost.config import Settings
from llmhost.engines.base import Engine
from llmhost.faces import ops, predict, tools
from llmhost.faces.openai import chat, completions
from llmhost.faces.rewards import router as rewards_router
from llmhost.faces.simple import router as simple_router
from llmhost.server.auth import ApiKeyMiddleware, load_api_keys
from llmhost.server.errors import install_error_handlers
from llmhost.server.state import ServerState
from llmhost.tools.observation import ObservationService

log = logging.getLogger("llmhost.server")


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

    app = FastAPI(title="llmhost", version=__version__, lifespan=lifespan)
    app.state.llmhost = state
    # One sandbox for the whole app: `/get_observation` and the code loop share its slots and queue.
    observation = ObservationService(tools.sandbox_from_settings(settings))
    app.state.observation_service = observation
    state.sandbox = observation.sandbox
    state.metrics.watch_sandbox(lambda: dict(observation.sandbox.outcomes))
    install_error_handlers(app)
    api_keys = load_api_keys(settings.api_key, settings.api_key_file)
    if api_keys:
        app.add_middleware(ApiKeyMiddleware, api_keys=api_keys)
    if settings.allowed_origins:  # added last, so it wraps auth: preflights and 401s carry CORS headers
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.allowed_origins, allow_methods=["*"], allow_headers=["*"]
        )
    app.include_router(ops.router)
    app.include_router(chat.router)
    app.include_router(completions.router)
    app.include_router(simple_router)  # /api/v1: seed 002's chat service
    app.include_router(predict.router)
    app.include_router(tools.router)  # verl-tool /get_observation (CONTRACTS.md §5)
    app.include_router(rewards_router)  # /v1/rewards/consistency: seed 000's judge as a batch reward
    return app
