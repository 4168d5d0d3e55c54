"""`POST /v1/messages` and `POST /v1/messages/count_tokens`: a thin face on the generation pipeline.

A stream is Anthropic's event sequence, each event named on an `event:` line (the SDKs dispatch on it):
`message_start`, then per content block `content_block_start`, its `content_block_delta`s
(`thinking_delta`, `text_delta`, `input_json_delta`) and `content_block_stop`, then `message_delta`
(stop reason and final usage) and `message_stop`. An error after the start is a last `error` event.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from llmhost.pipeline import ChatInput, Generation, GenerationRequest, PreparedPrompt
from llmhost.server.deps import StateDep
from llmhost.server.errors import describe, shaped_route_class
from llmhost.server.sse import Event, sse_response
from llmhost.server.state import ServerState
from llmhost.types import Delta

from .blocks import AnswerReader, BlockEvents
from .responses import (
    CountTokensResponse,
    MessageDelta,
    MessageDeltaEvent,
    MessageResponse,
    MessageStartEvent,
    MessageStopEvent,
    MessageUsage,
    error_body,
    sse_event,
)
from .schemas import CountTokensRequest, MessagesRequest


def _respond(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, status), status_code=status, headers=headers)


# Every error on these routes answers in Anthropic's shape, bad input as 400.
router = APIRouter(tags=["anthropic"], route_class=shaped_route_class(_respond, limited_keys=("messages",)))


@router.post("/v1/messages", response_model=None, responses={200: {"model": MessageResponse}})
async def create_message(body: MessagesRequest, state: StateDep, request: Request) -> Any:
    """Anthropic's Messages API; `stream: true` answers with its event stream."""
    template = state.require_loaded()
    model_name = state.resolve_model(body.model)
    body.check_supported()
    plan = body.tool_plan(template.tool_call_format)
    chat = body.chat_input(plan)
    sampling = plan.sampling(body.sampling(), supports_grammar=state.generation.info().supports_grammar)
    # Every refusal (context length, queue full) happens here, before any byte of the answer is sent.
    generation = await state.generation.start(
        GenerationRequest([chat], [[sampling]], request_id=f"msg_{uuid.uuid4().hex}")
    )
    parser = None if chat.prefill else body.reasoning_parser(state.settings.reasoning_parser)
    reader = AnswerReader(parser, plan, opens_thinking=generation.prompt.opens_thinking)
    stop_sequences = body.stop_sequences or ()
    if body.stream:
        return sse_response(
            _events(generation, reader, model_name, stop_sequences),
            error_event=_error_event,
            error_event_name="error",
            shutdown_grace_s=state.settings.shutdown_grace,
        )
    [result] = await generation.collect(until_disconnected=request.receive)  # a client gone cancels it
    reader.feed(result.text, is_last=True)
    stop_reason, stop_sequence = reader.stop_reason(result, stop_sequences)
    return MessageResponse(
        id=generation.request_id,
        model=model_name,
        content=reader.content(),
        stop_reason=stop_reason,
        stop_sequence=stop_sequence,
        usage=MessageUsage.from_totals(generation.usage(prompt_per_sequence=False)),
    )


async def _events(
    generation: Generation, reader: AnswerReader, model_name: str, stop_sequences: Sequence[str]
) -> AsyncIterator[Event]:
    start = MessageResponse(
        id=generation.request_id,
        model=model_name,
        content=[],
        stop_reason=None,
        stop_sequence=None,
        usage=MessageUsage(input_tokens=len(generation.prompt), output_tokens=0),
    )
    yield sse_event(MessageStartEvent(message=start))
    blocks = BlockEvents()
    last: Delta | None = None
    async for _, delta in generation.deltas():
        is_last = delta.finish_reason is not None
        for event in blocks.events(reader.feed(delta.text, is_last=is_last)):
            yield event
        if is_last:
            last = delta
    for event in blocks.close():
        yield event
    stop_reason, stop_sequence = reader.stop_reason(last, stop_sequences)
    usage = MessageUsage.from_totals(generation.usage(prompt_per_sequence=False))
    yield sse_event(
        MessageDeltaEvent(
            delta=MessageDelta(stop_reason=stop_reason, stop_sequence=stop_sequence), usage=usage
        )
    )
    yield sse_event(MessageStopEvent())


def _error_event(exc: BaseException) -> dict[str, Any]:
    status, body = describe(exc)
    return error_body(body["error"]["message"], status)


@router.post("/v1/messages/count_tokens")
async def count_tokens(body: CountTokensRequest, state: StateDep) -> CountTokensResponse:
    """The tokens of the prompt `/v1/messages` would render for this conversation; nothing is generated."""
    template = state.require_loaded()
    state.resolve_model(body.model)
    body.check_supported()
    prompt = await _prepare(state, body.chat_input(body.tool_plan(template.tool_call_format)))
    return CountTokensResponse(input_tokens=len(prompt))


async def _prepare(state: ServerState, chat: ChatInput) -> PreparedPrompt:
    """Render and tokenize as generation would (limits, off the event loop for large inputs).

    The generation service has no public "prepare only" yet, so its preparer is used directly."""
    [prompt] = await state.generation.prepare([chat], param="messages")
    return prompt


def is_messages_path(path: str) -> bool:
    return path == "/v1/messages" or path.startswith("/v1/messages/")
