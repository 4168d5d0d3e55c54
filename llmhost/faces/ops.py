"""Operator routes: liveness, the judge-compatible `/health`, and Prometheus `/metrics`.

None of these ever queues behind generation: they read state the engine keeps current.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field

from llmhost.faces.wire import FaceRouter, ResponseModel, json_response
from llmhost.server.deps import StateDep
from llmhost.server.errors import ErrorShapes
from llmhost.server.state import ServerState

router = FaceRouter(tags=["ops"])

SandboxMode = Annotated[
    str | None,
    Field(description="The code sandbox's mode (bwrap, rlimits, off, unavailable); null before its probe."),
]


class LiveResponse(ResponseModel):
    status: Literal["alive"]


class HealthResponse(ResponseModel):
    status: Literal["healthy"]
    model_loaded: bool
    model: str
    engine: str
    device: str
    sandbox: SandboxMode


class HealthUnavailableResponse(ResponseModel):
    status: Literal["loading", "unloaded", "failed", "restarting"]
    model_loaded: bool
    model: str
    error: str | None = Field(description="Why loading failed, or why the engine restarts.")
    sandbox: SandboxMode


class ReadyResponse(ResponseModel):
    status: Literal["ready"]


class NotReadyResponse(ResponseModel):
    status: Literal["not_ready"]
    error: str | None


@router.get("/live")
async def live() -> LiveResponse:
    return LiveResponse(status="alive")


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthUnavailableResponse, "description": "The model is not loaded."}},
)
async def health(state: StateDep) -> Any:
    """Seed-000 shape: 200 `{"status":"healthy","model_loaded":true}`, 503 while not loaded."""
    if state.is_loaded and state.engine_down_reason is None:
        info = state.engine.info()
        return HealthResponse(
            status="healthy",
            model_loaded=True,
            model=state.served_names[0],
            engine=info.engine,
            device=info.device,
            sandbox=_sandbox_mode(state),
        )
    status = "failed" if state.load_error else "unloaded" if state.is_unloaded else "loading"
    error = state.load_error
    if state.is_loaded and state.engine_down_reason is not None:  # a supervised engine is restarting
        status, error = "restarting", state.engine_down_reason
    body = HealthUnavailableResponse(
        status=status,
        model_loaded=False,
        model=state.served_names[0],
        error=error,
        sandbox=_sandbox_mode(state),
    )
    return json_response(body, 503)


def _sandbox_mode(state: ServerState) -> str | None:
    """The code sandbox's active mode (`bwrap`, `rlimits`, `off`, `unavailable`); None before its probe."""
    return state.sandbox.mode if state.sandbox is not None else None


@router.get(
    "/ready",
    response_model=ReadyResponse,
    responses={503: {"model": NotReadyResponse, "description": "No one-token generation has succeeded yet."}},
)
async def ready(state: StateDep) -> Any:
    """200 once a one-token generation has succeeded since the engine last (re)started."""
    if state.is_ready:
        return ReadyResponse(status="ready")
    return json_response(NotReadyResponse(status="not_ready", error=state.load_error), 503)


@router.get("/metrics", response_class=PlainTextResponse)  # documented as text; sent in Prometheus' type
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def mount(app: FastAPI, shapes: ErrorShapes) -> None:
    """Liveness, readiness, the judge-compatible `/health` and `/metrics` (OpenAI error shape)."""
    app.include_router(router)
