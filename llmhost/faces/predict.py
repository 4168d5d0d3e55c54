"""Seed 003's evaluation API: `GET /` (readiness, batch-mode flag) and `POST /predict`.

`{"prompt": str}` gets `{"response": str}`; `{"prompt": [str, …]}` gets `{"response": [str, …]}`, same
length and order, a list even for one item. Each prompt is one user turn rendered with the model's chat
template (after `--predict-system-prompt` when set); answers come back with `<think>…</think>` removed.

A batch is submitted to the engine at once, so every prompt rides continuous batching; nothing here
puts a deadline on it (the harness gives the whole batch one time limit, and only it knows that limit).

Prompts that do not fit the context: a prompt whose rendered tokens leave no room for even one answer
token fails the request with 400, naming every such index, before any generation starts (silently
cutting a question would change what is being evaluated). A prompt that fits but leaves less room than
`max_new_tokens` gets a shorter answer instead of failing the batch (seed 003 clamped the same way).

Errors use FastAPI's plain shape, `{"detail": "<message>"}`, which is what this seed's clients know:
422 for a body that does not parse or has a wrong type, 400 for values the request cannot have, 503
while the model loads. The shape is local to these routes (see `PredictRoute`); the OpenAI face keeps
its own.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator
from pydantic_core import PydanticCustomError

from llmhost.conversation.reasoning import strip_thinking
from llmhost.faces.wire import (
    DetailErrorResponse,
    FaceRouter,
    ResponseModel,
    error_responses,
    json_response,
)
from llmhost.pipeline import ChatInput, Fit, GenerationRequest
from llmhost.server.deps import StateDep
from llmhost.server.errors import ErrorShapes, detail_error_body, responder, shaped_route_class
from llmhost.types import SamplingParams

log = logging.getLogger("llmhost.predict")

# Decoding defaults when the request leaves them out, as seed 003 tuned them for its evaluation.
# Greedy: evaluation wants the model's single best answer, reproducible run to run, and a prompt answered
# inside a batch then matches the same prompt answered alone (bit for bit with --no-enable-prefix-caching;
# with the prefix cache a near-tie can go the other way: README, Reproducibility).
# A mild repetition penalty (1.05): small models at pure greedy fall into loops ("la femme au martyre,
# la femme au martyre, …" from SmolLM2 for "What is the capital of France?"), which burn the whole token
# budget on text that scores nothing;
# 1.05 breaks most loops without steering normal answers, and although it leaves the engine's argmax
# fast path it cost no measurable speed (a 16-prompt, 128-token batch: 13.3 s with it, 13.8 s without,
# on 2 CPU cores). Seed 003 also sent frequency_penalty 0.1; that one is left to the request.
DEFAULT_TEMPERATURE = 0.0
DEFAULT_REPETITION_PENALTY = 1.05

Number = Annotated[float, Field(strict=True)]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    prompt: str | list[str]
    max_new_tokens: StrictInt | None = Field(None, ge=1)
    temperature: Number | None = None
    top_p: Number | None = None
    top_k: StrictInt | None = None
    repetition_penalty: Number | None = None
    frequency_penalty: Number | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _check_prompt(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise PydanticCustomError("prompt_type", "'prompt' must be a string or a list of strings")
        if not value:
            raise PydanticCustomError("prompt_empty", "'prompt' is an empty list; send at least one prompt")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise PydanticCustomError(
                    "prompt_item_type",
                    "'prompt[{index}]' must be a string, not {kind}",
                    {"index": i, "kind": type(item).__name__ if item is not None else "null"},
                )
        return value

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt

    def sampling(self, max_tokens: int) -> SamplingParams:
        """Checked by `SamplingParams` (the same ranges as every other face): a bad value is a 400."""
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=DEFAULT_TEMPERATURE if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=self.top_k or 0,
            repetition_penalty=(
                DEFAULT_REPETITION_PENALTY if self.repetition_penalty is None else self.repetition_penalty
            ),
            frequency_penalty=self.frequency_penalty or 0.0,
        )


class PredictResponse(ResponseModel):
    response: str | list[str] = Field(description="A list, in the prompts' order, when `prompt` was a list.")


class PredictStatusResponse(ResponseModel):
    status: Literal["ok", "batch"] = Field(description="`batch` with --batch-mode.")


class PredictUnavailableResponse(ResponseModel):
    status: Literal["loading", "failed"]
    detail: str


def validation_message(exc: RequestValidationError, content_type: str = "application/json") -> str:
    """One readable sentence for the first problem pydantic found."""
    errors = exc.errors()
    if not errors:
        return "invalid request"
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    kind = err.get("type", "")
    if kind == "json_invalid":
        return f"the request body is not valid JSON: {err.get('ctx', {}).get('error', err.get('msg'))}"
    if not loc:
        if content_type and "json" not in content_type.lower():  # e.g. `curl -d` sends a form type
            return "send the body as JSON with the header 'Content-Type: application/json'"
        return 'the request body must be a JSON object such as {"prompt": "..."}'
    if kind.startswith("prompt_"):
        return str(err.get("msg"))
    field = loc[0]
    if kind == "missing":
        return f"'{field}' is required"
    return f"'{field}': {err.get('msg')}"


def _describe_validation(exc: RequestValidationError, request: Request) -> str:
    return validation_message(exc, request.headers.get("content-type", ""))


# Every error on these routes answers `{"detail": "…"}` (FastAPI's 422 for a bad body), never the OpenAI
# shape; a wrong method or unknown path is shaped by the app-wide table in `server/errors.py`.
PredictRoute = shaped_route_class(
    responder(detail_error_body), validation_status=422, describe_validation=_describe_validation
)


router = FaceRouter(
    tags=["predict"],
    route_class=PredictRoute,
    responses=error_responses(
        DetailErrorResponse, '`{"detail": message}`; 422 for a body that does not parse.'
    ),
)


@router.get(
    "/",
    response_model=PredictStatusResponse,
    responses={
        503: {"model": PredictUnavailableResponse, "description": "The model is loading, or failed to."},
    },
)
async def root(state: StateDep) -> Any:
    """`{"status": "ok"}` (or `"batch"` with `--batch-mode`) once the model can answer, 503 before.

    A browser (Accept ranking text/html over JSON) gets the chat page instead: that request never
    reaches this route, the page face's own `GET /` matches it first (llmhost/faces/page)."""
    if not state.is_loaded:
        status = "loading" if state.load_error is None else "failed"
        detail = state.load_error or "the model is still loading; retry shortly"
        return json_response(PredictUnavailableResponse(status=status, detail=detail), 503)
    return PredictStatusResponse(status="batch" if state.settings.batch_mode else "ok")


@router.post("/predict")
async def predict(body: PredictRequest, request: Request, state: StateDep) -> PredictResponse:
    state.require_loaded()
    max_new_tokens = (
        state.settings.predict_max_new_tokens if body.max_new_tokens is None else body.max_new_tokens
    )
    params = body.sampling(max_new_tokens)  # bad sampling values are a 400 before anything is rendered
    system = state.settings.predict_system_prompt
    chats = [ChatInput([*_system(system), {"role": "user", "content": p}]) for p in body.prompts]
    # Admitted all at once (or 429 as a whole), every sequence started before the first is read: the
    # engine sees the whole batch together and schedules it with continuous batching. A prompt that
    # leaves less room than max_new_tokens gets a shorter answer (Fit.CLAMP); one that leaves none is a
    # 400 naming every such index.
    generation = await state.generation.start(
        GenerationRequest(chats, [[params]] * len(chats), fit=Fit.CLAMP, param="prompt", batch_noun="prompt")
    )
    # A harness that gives up on a big batch must not leave the engine decoding it.
    results = await generation.collect(until_disconnected=request.receive)
    answers = [strip_thinking(r.text) for r in results]
    return PredictResponse(response=answers[0] if isinstance(body.prompt, str) else answers)


def _system(prompt: str | None) -> list[dict[str, str]]:
    return [{"role": "system", "content": prompt}] if prompt else []


def mount(app: FastAPI, shapes: ErrorShapes) -> None:
    app.include_router(router)
    shapes.register(lambda path: path == "/" or path.startswith("/predict"), detail_error_body)
