"""verl-tool's tool server face: `POST /get_observation` (CONTRACTS.md §5).

Body `{"trajectory_ids": [str…], "actions": [str…], "finish": [bool…]?, "is_last_step": [bool…]?,
"extra_fields": [{…}…]?}`; answer `{"observations": [...], "dones": [...], "valids": [...]}`, one entry
per trajectory in the request's order, plus an extension list `results` with what each run did
(exit code, timed_out, truncated, duration, sandbox mode; null where nothing ran). The actions of one
batch run in parallel through the shared `Sandbox`, which caps how many run at once.

Errors use FastAPI's plain `{"detail": …}` shape, which verl-tool's clients know: 422 for a body that
does not parse, 429 (Retry-After) when the sandbox queue is full, 503 when no accepted isolation works.
The same router is mounted in the main app and served alone by `llmhost tool-server`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmhost.config import Settings
from llmhost.faces.wire import DetailErrorResponse, FaceRouter, ResponseModel, error_responses
from llmhost.server.errors import ErrorShapes, detail_error_body, responder, shaped_route_class
from llmhost.tools.observation import ObservationService
from llmhost.tools.sandbox import Limits, Sandbox

log = logging.getLogger("llmhost.tools")


def sandbox_from_settings(settings: Settings) -> Sandbox:
    limits = Limits(timeout_s=settings.sandbox_timeout_s, max_output_bytes=settings.sandbox_max_output_bytes)
    return Sandbox(
        settings.sandbox,
        limits,
        max_concurrency=settings.sandbox_max_concurrency,
        max_queue=settings.sandbox_max_queue,
    )


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Probe the sandbox once at start-up (this logs the active mode) and keep the trajectory state."""
    if getattr(app.state, "observation_service", None) is None:
        app.state.observation_service = ObservationService(sandbox_from_settings(app.state.llmhost.settings))
    await app.state.observation_service.sandbox.probe()
    yield


router = FaceRouter(
    tags=["tools"],
    lifespan=_lifespan,
    route_class=shaped_route_class(responder(detail_error_body), validation_status=422),
    responses=error_responses(
        DetailErrorResponse, '`{"detail": message}`; 422 for a bad body, 429 busy, 503 no isolation.'
    ),
)


def get_service(request: Request) -> ObservationService:
    state = request.app.state
    if getattr(state, "observation_service", None) is None:  # an app whose lifespan did not run
        state.observation_service = ObservationService(sandbox_from_settings(state.llmhost.settings))
    return state.observation_service


ServiceDep = Annotated[ObservationService, Depends(get_service)]


class ObservationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    trajectory_ids: list[str] = Field(min_length=1)
    actions: list[str]
    finish: list[bool] | None = None
    is_last_step: list[bool] | None = None
    extra_fields: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _same_lengths(self) -> ObservationRequest:
        n = len(self.trajectory_ids)
        for name in ("actions", "finish", "is_last_step", "extra_fields"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"'{name}' has {len(value)} entries but 'trajectory_ids' has {n}")
        return self

    def finish_flags(self) -> list[bool]:
        """`finish`, also read from each `extra_fields` entry (verl-tool copies it there)."""
        flags = list(self.finish or [False] * len(self.trajectory_ids))
        for i, extra in enumerate(self.extra_fields or []):
            flags[i] = flags[i] or bool(extra.get("finish", False))
        return flags


class SandboxRun(ResponseModel):
    """What one run of an action's code did (llmhost extension)."""

    stdout: str
    stderr: str
    exit_code: int | None = Field(description="Negative: killed by that signal; null: it never exited.")
    timed_out: bool
    truncated: bool
    duration_s: float
    mode: str = Field(description="The sandbox mode it ran under.")


class ObservationResponse(ResponseModel):
    observations: list[str | dict[str, Any]] = Field(
        description='The text to append, or `{"obs": text, …}` with why the action was not valid.'
    )
    dones: list[bool]
    valids: list[bool]
    results: list[SandboxRun | None] = Field(description="null where no code ran.")


class ToolServerHealthResponse(ResponseModel):
    status: Literal["healthy"]
    sandbox: str | None = Field(description="The sandbox's active mode; null before its probe.")


@router.post("/get_observation")
async def get_observation(body: ObservationRequest, service: ServiceDep) -> ObservationResponse:
    entries = await service.observe(body.trajectory_ids, body.actions, body.finish_flags())
    return ObservationResponse(
        observations=[e.observation for e in entries],
        dones=[e.done for e in entries],
        valids=[e.valid for e in entries],
        results=[SandboxRun.model_validate(e.result.to_dict()) if e.result else None for e in entries],
    )


def create_tool_app(settings: Settings) -> FastAPI:
    """An app that serves only the tool face (`llmhost tool-server`), plus `/health` with the mode."""
    app = FastAPI(title="llmhost tool server", default_response_class=JSONResponse)
    service = ObservationService(sandbox_from_settings(settings))
    app.state.observation_service = service

    @app.get("/health")
    async def health() -> ToolServerHealthResponse:
        return ToolServerHealthResponse(status="healthy", sandbox=service.sandbox.mode)

    app.include_router(router)
    return app


def mount(app: FastAPI, shapes: ErrorShapes) -> None:
    """verl-tool `/get_observation` (CONTRACTS.md §5) in the main app."""
    app.include_router(router)
    shapes.register(lambda path: path == "/get_observation", detail_error_body)
