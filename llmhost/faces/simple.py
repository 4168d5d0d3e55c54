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

import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from llmhost.conversation.prompt_templates import apply_prompt_template
from llmhost.conversation.reasoning import ReasoningParserName, ReasoningSplitter, split_reasoning
from llmhost.errors import InvalidRequest, LlmhostError
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


def simple_error_body(message: str) -> dict[str, Any]:
    """This face's error shape (CONTRACTS.md §3)."""
    return {"response": "", "success": False, "error": message}


# Errors on this face answer `{"response": "", "success": false, "error": …}`, bad input as 400.
router = APIRouter(
    prefix="/api/v1",
    tags=["simple chat"],
    route_class=shaped_route_class(responder(simple_error_body), limited_keys=("history",)),
)


# -- wire schemas ----------------------------------------------------------------------------------
class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class HistoryTurn(_Request):
    role: Literal["system", "user", "assistant"]
    content: StrictStr


class SimpleChatRequest(_Request):
    message: StrictStr
    history: list[HistoryTurn] | None = None
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
        messages = [*turns, {"role": "user", "content": self.message}]
        if self.prompt_template is None:
            if self.template_vars is not None:
                raise InvalidRequest("'template_vars' needs a 'prompt_template'", param="template_vars")
            return messages
        return apply_prompt_template(
            messages, self.prompt_template, self.template_vars, directory=prompt_templates_dir
        )

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
    chat = ChatInput(body.messages(state.settings.prompt_templates), template_kwargs=body.template_kwargs())
    return await state.generation.start(GenerationRequest([chat], [[body.sampling()]], param="message"))


# -- routes ----------------------------------------------------------------------------------------
@router.post("/chat", response_model=None)
async def chat(body: SimpleChatRequest, state: StateDep, request: Request) -> dict[str, Any]:
    """`{"response": the answer, "success": true, "error": null}`; with thinking split, `response` is
    the answer alone and `thinking` holds the reasoning (null when there was none)."""
    generation = await _start(body, state)
    [result] = await generation.collect(until_disconnected=request.receive)  # a client gone cancels it
    parser = body.reasoning_parser(state.settings.reasoning_parser)
    if parser is None:
        return {"response": result.text, "success": True, "error": None}
    thinking, answer = split_reasoning(result.text, generation.prompt.opens_thinking, parser)
    return {"response": answer, "success": True, "error": None, "thinking": thinking}


def _event(type_: str, content: str) -> str:
    return json.dumps({"type": type_, "content": content}, ensure_ascii=False)


def _error_event(exc: BaseException) -> dict[str, str]:
    _, body = describe(exc)
    return {"type": "error", "content": body["error"]["message"]}


@router.post("/chat/stream", response_model=None)
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


@router.get("/health", response_model=None)
async def health(state: StateDep) -> Any:
    """Reads the load state only: it never runs a generation (the original's did, for 10+ s)."""
    if state.is_loaded and state.engine_down_reason is not None:  # a supervised engine is restarting
        return JSONResponse(
            {"status": "unhealthy", "message": f"the engine is restarting: {state.engine_down_reason}"},
            status_code=503,
        )
    if state.is_loaded:
        return {"status": "healthy", "message": "the model is loaded"}
    if state.load_error is not None:
        body = {"status": "error", "message": f"loading the model failed: {state.load_error}"}
    elif state.is_unloaded:
        body = {"status": "unhealthy", "message": "the model is unloaded; POST /api/v1/model/load loads it"}
    else:
        body = {"status": "unhealthy", "message": "the model is loading"}
    return JSONResponse(body, status_code=503)


def _engine_info(state: ServerState) -> EngineInfo | None:
    try:
        return state.engine.info()
    except LlmhostError:  # never loaded yet
        return None


@router.get("/model/info")
async def model_info(state: StateDep) -> dict[str, Any]:
    """`model_size` is in bytes (the model file); it and `device` are known once the model has loaded."""
    info = _engine_info(state)
    return {
        "model_name": state.served_names[0],
        "device": info.device if info is not None else "unknown",
        "is_loaded": state.is_loaded,
        "model_size": info.model_size_bytes if info is not None else 0,
        "engine": info.engine if info is not None else None,
        "max_model_len": info.max_model_len if info is not None else None,
        # A fallback chain (--fallback-model, --engine a,b): what was chosen and why earlier ones failed.
        **(report() if (report := getattr(state.engine, "load_report", None)) is not None else {}),
    }


@router.post("/model/load", response_model=None)
async def load_model(state: StateDep) -> Any:
    """Load the model (it loads at start-up; this matters after `/model/unload`). Concurrent calls
    load it once: the others wait and answer `already_loaded`."""
    try:
        is_new = await state.load_model()
    except Exception:
        return JSONResponse(
            {"status": "error", "message": f"loading the model failed: {state.load_error}"}, status_code=500
        )
    if not is_new:
        return {"status": "already_loaded", "message": "the model is already loaded"}
    return {"status": "loaded", "message": "the model is loaded"}


@router.post("/model/unload")
async def unload_model(state: StateDep) -> dict[str, str]:
    """Free the model's memory (requests in flight fail); generation answers 503 until `/model/load`."""
    if await state.unload_model():
        return {"status": "unloaded", "message": "the model is unloaded"}
    return {"status": "not_loaded", "message": "the model was not loaded"}


def mount(app: FastAPI, shapes: ErrorShapes) -> None:
    app.include_router(router)
    shapes.register(lambda path: path.startswith("/api/v1/"), simple_error_body)
