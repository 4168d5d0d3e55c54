"""The simple chat API of seed 002 (a Qwen3 chat service), under `/api/v1`.

Its clients send `{"message", "history"}` and read `{"response", "success", "error"}`, or a stream of
`data: {"type": "start"|"chunk"|"thinking"|"end"|"error", "content": …}` events. What changed from the
original, on purpose: the stream is `text/event-stream` (it was `text/plain`), JSON keeps non-ASCII text
as is, `/health` never generates, and errors carry an honest HTTP status (the original answered 200
with the error in the body); the body keeps this face's shape, so `{"success": false, "error": …}`
still reads the same. An error after a stream has started arrives as a final `error` event.

Thinking text streams raw (`<think>…</think>` inside the chunks, as the original did) unless the
request sets `split_thinking`, or the server runs with `--reasoning-parser` and the request does not
say `"split_thinking": false`; then `thinking` events come before the answer's `chunk` events.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from llmhost.conversation.prompt_templates import messages_for_request
from llmhost.conversation.reasoning import ReasoningParserName, ReasoningSplitter, split_reasoning
from llmhost.errors import InvalidRequest, LlmhostError
from llmhost.faces.wire import FaceRouter, ResponseModel, error_responses, event_stream, json_response
from llmhost.media import ImagePart
from llmhost.pipeline import ChatInput, Generation, GenerationRequest
from llmhost.server.deps import StateDep
from llmhost.server.errors import ErrorShapes, describe, responder, shaped_route_class
from llmhost.server.sse import sse_response
from llmhost.server.state import ServerState
from llmhost.types import EngineInfo, SamplingParams

log = logging.getLogger("llmhost.faces.simple")

Number = Annotated[float, Field(strict=True)]

# Qwen3's generation_config.json: what the original service sampled with (transformers' generate()
# reads it), so its users get the answers they are used to. A request can override each.
DEFAULT_TEMPERATURE = 0.6
DEFAULT_TOP_P = 0.95
DEFAULT_TOP_K = 20


# -- wire schemas (answers) ------------------------------------------------------------------------
class SimpleChatResponse(ResponseModel):
    response: str = Field(description="The answer; with thinking split, without the thinking.")
    success: bool
    error: str | None
    thinking: str | None = Field(
        None, description="Sent when the thinking is split: the reasoning, null when there was none."
    )


class SimpleStreamEvent(ResponseModel):
    type: Literal["start", "thinking", "chunk", "end", "error"]
    content: str = Field(description="Empty for start and end; the message for error.")


class SimpleHealthResponse(ResponseModel):
    status: Literal["healthy", "unhealthy", "error"]
    message: str


class ModelInfoResponse(ResponseModel):
    model_config = ConfigDict(extra="allow")  # the fallback chain's report may grow

    model_name: str
    device: str = Field(description="'unknown' until the model has loaded.")
    is_loaded: bool
    model_size: int = Field(description="The model file's size in bytes; 0 until the model has loaded.")
    engine: str | None
    max_model_len: int | None
    accepts_images: bool | None = Field(
        None, description="Whether the served model takes images (`images`); null until it has loaded."
    )
    # A fallback chain (--fallback-model, --engine a,b) only: what was chosen, and why earlier ones failed.
    chosen_engine: str | None = None
    chosen_model: str | None = None
    candidates: list[dict[str, Any]] | None = None
    fallback_failures: list[dict[str, Any]] | None = None


class ModelLoadResponse(ResponseModel):
    status: Literal["loaded", "already_loaded", "error"]
    message: str


class ModelUnloadResponse(ResponseModel):
    status: Literal["unloaded", "not_loaded"]
    message: str


def simple_error_body(message: str) -> dict[str, Any]:
    """This face's error shape (CONTRACTS.md §3)."""
    return SimpleChatResponse(response="", success=False, error=message).wire()


# Errors on this face answer `{"response": "", "success": false, "error": …}`, bad input as 400.
router = FaceRouter(
    prefix="/api/v1",
    tags=["simple chat"],
    route_class=shaped_route_class(responder(simple_error_body), limited_keys=("history",)),
    responses=error_responses(SimpleChatResponse, "`success: false`, the reason in `error`."),
)


# -- wire schemas (requests) -----------------------------------------------------------------------
class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class HistoryTurn(_Request):
    role: Literal["system", "user", "assistant"]
    content: StrictStr


class SimpleChatRequest(_Request):
    message: StrictStr
    history: list[HistoryTurn] | None = None
    images: list[StrictStr] | None = Field(
        None,
        description="Images shown with `message`, before its text: base64 `data:` URLs (or `file://` and "
        "`http(s)://` URLs where the server allows them). Only a model that takes images accepts them.",
    )
    max_new_tokens: StrictInt | None = Field(None, ge=1, description="Default: until the model stops.")
    temperature: Number | None = Field(None, ge=0.0, le=2.0)
    top_p: Number | None = Field(None, gt=0.0, le=1.0)
    top_k: StrictInt | None = Field(None, ge=-1)
    repetition_penalty: Number | None = Field(None, gt=0.0, le=10.0)
    seed: StrictInt | None = None
    enable_thinking: StrictBool | None = Field(
        None, description="Passed to the chat template (Qwen3: false renders with thinking off)."
    )
    split_thinking: StrictBool | None = Field(
        None,
        description="Separate the thinking from the answer. Default: on when the server runs "
        "with --reasoning-parser, off otherwise.",
    )

    prompt_template: StrictStr | None = Field(
        None, description="A named prompt template (rag-zh, rag-en, simple-zh, or --prompt-templates)."
    )
    template_vars: dict[str, Any] | None = Field(
        None,
        description="The template's variables (documents/context, custom_prompt, …); "
        "`question` defaults to `message`.",
    )

    def messages(self, prompt_templates_dir: str | None = None) -> list[dict[str, Any]]:
        turns = [{"role": t.role, "content": t.content} for t in self.history or ()]
        content: str | list[dict[str, Any]] = self.message
        if self.images:
            if self.prompt_template is not None:
                raise InvalidRequest(
                    "a 'prompt_template' cannot be combined with images yet", param="prompt_template"
                )
            content = [*({"type": "image"} for _ in self.images), {"type": "text", "text": self.message}]
        messages = [*turns, {"role": "user", "content": content}]
        return messages_for_request(
            messages, self.prompt_template, self.template_vars, directory=prompt_templates_dir
        )

    def image_parts(self) -> tuple[ImagePart, ...]:
        return tuple(ImagePart(url, f"images[{i}]") for i, url in enumerate(self.images or ()))

    def template_kwargs(self) -> dict[str, Any]:
        return {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_new_tokens,
            temperature=DEFAULT_TEMPERATURE if self.temperature is None else self.temperature,
            top_p=DEFAULT_TOP_P if self.top_p is None else self.top_p,
            top_k=DEFAULT_TOP_K if self.top_k is None else self.top_k,
            repetition_penalty=self.repetition_penalty or 1.0,
            seed=self.seed,
        )

    def reasoning_parser(self, server_parser: ReasoningParserName | None) -> ReasoningParserName | None:
        """The parser that splits this request's thinking, or None to stream the raw text."""
        is_split = self.split_thinking if self.split_thinking is not None else server_parser is not None
        return (server_parser or "qwen3") if is_split else None


async def _start(body: SimpleChatRequest, state: ServerState) -> Generation:
    """Render, validate and admit, so every error so far is an HTTP error, not a stream event."""
    state.require_loaded()
    chat = ChatInput(
        body.messages(state.settings.prompt_templates),
        template_kwargs=body.template_kwargs(),
        images=body.image_parts(),
    )
    return await state.generation.start(GenerationRequest([chat], [[body.sampling()]], param="message"))


# -- routes ----------------------------------------------------------------------------------------
@router.post("/chat")
async def chat(body: SimpleChatRequest, state: StateDep, request: Request) -> SimpleChatResponse:
    """`{"response": the answer, "success": true, "error": null}`; with thinking split, `response` is
    the answer alone and `thinking` holds the reasoning (null when there was none)."""
    generation = await _start(body, state)
    [result] = await generation.collect(until_disconnected=request.receive)  # a client gone cancels it
    parser = body.reasoning_parser(state.settings.reasoning_parser)
    if parser is None:
        return SimpleChatResponse(response=result.text, success=True, error=None)
    thinking, answer = split_reasoning(result.text, generation.prompt.opens_thinking, parser)
    return SimpleChatResponse(response=answer, success=True, error=None, thinking=thinking)


def _event(type_: str, content: str) -> str:
    return SimpleStreamEvent(type=type_, content=content).sse_data()


def _error_event(exc: BaseException) -> dict[str, Any]:
    _, body = describe(exc)
    return SimpleStreamEvent(type="error", content=body["error"]["message"]).wire()


@router.post(
    "/chat/stream",
    response_class=Response,  # documented by `responses`: an event stream, never JSON
    responses=event_stream(
        SimpleStreamEvent,
        "`start`, then `thinking` (when split) and `chunk` events, then `end`; or a last `error`.",
    ),
)
async def chat_stream(body: SimpleChatRequest, state: StateDep) -> Response:
    """`start`, then `thinking` (when split) and `chunk` events, then `end`; or a final `error`."""
    generation = await _start(body, state)
    parser = body.reasoning_parser(state.settings.reasoning_parser)
    opens_thinking = generation.prompt.opens_thinking
    splitter = None if parser is None else ReasoningSplitter(parser, prompt_opened=opens_thinking)

    async def events() -> AsyncIterator[str]:
        yield _event("start", "")
        async for _, delta in generation.deltas():
            if splitter is None:
                if delta.text:
                    yield _event("chunk", delta.text)
                continue
            thinking, answer = splitter.feed(delta.text)
            if delta.finish_reason is not None:
                tail_thinking, tail_answer = splitter.finish()
                thinking, answer = thinking + tail_thinking, answer + tail_answer
            if thinking:
                yield _event("thinking", thinking)
            if answer:
                yield _event("chunk", answer)
        yield _event("end", "")

    return sse_response(events(), error_event=_error_event, shutdown_grace_s=state.settings.shutdown_grace)


@router.get(
    "/health",
    response_model=SimpleHealthResponse,
    responses={
        503: {"model": SimpleHealthResponse, "description": "Not loaded, loading, failed or restarting."}
    },
)
async def health(state: StateDep) -> Any:
    """Reads the load state only: it never runs a generation (the original's did, for 10+ s)."""
    if state.is_loaded and state.engine_down_reason is not None:  # a supervised engine is restarting
        message = f"the engine is restarting: {state.engine_down_reason}"
        return json_response(SimpleHealthResponse(status="unhealthy", message=message), 503)
    if state.is_loaded:
        return SimpleHealthResponse(status="healthy", message="the model is loaded")
    if state.load_error is not None:
        body = SimpleHealthResponse(status="error", message=f"loading the model failed: {state.load_error}")
    elif state.is_unloaded:
        message = "the model is unloaded; POST /api/v1/model/load loads it"
        body = SimpleHealthResponse(status="unhealthy", message=message)
    else:
        body = SimpleHealthResponse(status="unhealthy", message="the model is loading")
    return json_response(body, 503)


def _engine_info(state: ServerState) -> EngineInfo | None:
    try:
        return state.engine.info()
    except LlmhostError:  # never loaded yet
        return None


@router.get("/model/info", response_model=ModelInfoResponse)
async def model_info(state: StateDep) -> ModelInfoResponse:
    """`model_size` is in bytes (the model file); it and `device` are known once the model has loaded."""
    info = _engine_info(state)
    return ModelInfoResponse(
        model_name=state.served_names[0],
        device=info.device if info is not None else "unknown",
        is_loaded=state.is_loaded,
        model_size=info.model_size_bytes if info is not None else 0,
        engine=info.engine if info is not None else None,
        max_model_len=info.max_model_len if info is not None else None,
        accepts_images=info.accepts_images if info is not None else None,
        # A fallback chain (--fallback-model, --engine a,b): what was chosen and why earlier ones failed.
        **((info.load_report or {}) if info is not None else {}),
    )


@router.post(
    "/model/load",
    response_model=ModelLoadResponse,
    responses={500: {"model": ModelLoadResponse, "description": "Loading failed (`status: error`)."}},
)
async def load_model(state: StateDep) -> Any:
    """Load the model (it loads at start-up; this matters after `/model/unload`). Concurrent calls
    load it once: the others wait and answer `already_loaded`."""
    try:
        is_new = await state.load_model()
    except Exception:
        message = f"loading the model failed: {state.load_error}"
        return json_response(ModelLoadResponse(status="error", message=message), 500)
    if not is_new:
        return ModelLoadResponse(status="already_loaded", message="the model is already loaded")
    return ModelLoadResponse(status="loaded", message="the model is loaded")


@router.post("/model/unload")
async def unload_model(state: StateDep) -> ModelUnloadResponse:
    """Free the model's memory (requests in flight fail); generation answers 503 until `/model/load`."""
    if await state.unload_model():
        return ModelUnloadResponse(status="unloaded", message="the model is unloaded")
    return ModelUnloadResponse(status="not_loaded", message="the model was not loaded")


def mount(app: FastAPI, shapes: ErrorShapes) -> None:
    app.include_router(router)
    shapes.register(lambda path: path.startswith("/api/v1/"), simple_error_body)
