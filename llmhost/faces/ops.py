"""Operator routes: liveness, the judge-compatible `/health`, and Prometheus `/metrics`.

None of these ever queues behind generation: they read state the engine keeps current.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from llmhost.server.deps import StateDep
from llmhost.server.errors import ErrorShapes
from llmhost.server.state import ServerState

router = APIRouter(tags=["ops"])


@router.get("/live")
async def live() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/health", response_model=None)
async def health(state: StateDep) -> Any:
    """Seed-000 shape: 200 `{"status":"healthy","model_loaded":true}`, 503 while not loaded."""
    if state.is_loaded and state.engine_down_reason is None:
        info = state.engine.info()
        return {
            "status": "healthy",
            "model_loaded": True,
            "model": state.served_names[0],
            "engine": info.engine,
            "device": info.device,
            "sandbox": _sandbox_mode(state),
        }
    body = {
        "status": "failed" if state.load_error else "unloaded" if state.is_unloaded else "loading",
        "model_loaded": False,
        "model": state.served_names[0],
        "error": state.load_error,
        "sandbox": _sandbox_mode(state),
    }
    if state.is_loaded and state.engine_down_reason is not None:  # a supervised engine is restarting
        body |= {"status": "restarting", "error": state.engine_down_reason}
    return JSONResponse(body, status_code=503)


def _sandbox_mode(state: ServerState) -> str | None:
    """The code sandbox's active mode (`bwrap`, `rlimits`, `off`, `unavailable`); None before its probe."""
    return state.sandbox.mode if state.sandbox is not None else None


@router.get("/ready", response_model=None)
async def ready(state: StateDep) -> Any:
    """200 once a one-token generation has succeeded since the engine last (re)started."""
    if state.is_ready:
        return {"status": "ready"}
    return JSONResponse({"status": "not_ready", "error": state.load_error}, status_code=503)


@router.get("/metrics")
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def mount(app: FastAPI, shapes: ErrorShapes) -> None:
    """Liveness, readiness, the judge-compatible `/health` and `/metrics` (OpenAI error shape)."""
    app.include_router(router)
