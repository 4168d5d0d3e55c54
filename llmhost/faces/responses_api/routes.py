"""`POST /v1/responses`, `GET /v1/responses/{id}` and `DELETE /v1/responses/{id}`: OpenAI's Responses
API (Codex CLI speaks only this), a thin face on the generation pipeline.

A request becomes one chat generation: its `input` (after the conversation of `previous_response_id`,
when given) rendered with the model's chat template, `instructions` first. The answer's text is read
by the shared reader (`faces/answer.py`: reasoning split with `--reasoning-parser`, tool calls parsed
through the request's `ToolPlan`) into output items: `reasoning`, `message`, `function_call`. A stream
is OpenAI's event sequence (events.py). `store` (default true) keeps the response for its key
(store.py).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from llmhost.errors import InvalidRequest, NotFound
from llmhost.faces.answer import AnswerReader
from llmhost.faces.openai.responses import ERRORS
from llmhost.faces.wire import FaceRouter, event_stream
from llmhost.pipeline import ChatInput, Generation, GenerationRequest
from llmhost.server.auth import api_key_id
from llmhost.server.deps import StateDep
from llmhost.server.errors import describe
from llmhost.server.item_limit import ItemLimitRoute
from llmhost.server.sse import sse_response
from llmhost.server.state import ServerState
from llmhost.types import Delta, FinishReason

from .events import Event, StreamEvent, StreamWriter, item_id
from .items import as_input_items, image_parts, template_messages
from .objects import (
    DeletedResponse,
    FunctionCallOutput,
    OutputMessage,
    OutputText,
    ReasoningOutput,
    ReasoningSettings,
    ReasoningText,
    ResponseObject,
    ResponseUsage,
    TextSettings,
)
from .schemas import ResponsesRequest
from .store import ResponseStore, StoredResponse

log = logging.getLogger("llmhost.responses")


class InputLimitRoute(ItemLimitRoute):
    limited_keys = ("input",)  # a conversation's items: --max-messages, checked before validation


router = FaceRouter(tags=["responses"], route_class=InputLimitRoute, responses=ERRORS)


def get_store(request: Request) -> ResponseStore:
    return request.app.state.responses_store


StoreDep = Annotated[ResponseStore, Depends(get_store)]


@dataclass(frozen=True)
class _Turn:
    """What finishing a response needs besides the answer."""

    state: ServerState
    store: ResponseStore
    owner: str | None  # the API key's id: its store
    is_stored: bool
    earlier: StoredResponse | None  # the response this one continues
    items: Sequence[Any]  # this request's input items


@router.post(
    "/v1/responses",
    response_model=ResponseObject,
    responses=event_stream(
        StreamEvent, "A response; with `stream: true`, OpenAI's events (`event:` lines name them)."
    ),
)
async def create_response(body: ResponsesRequest, state: StateDep, store: StoreDep, request: Request) -> Any:
    template = state.require_loaded()
    model_name = state.resolve_model(body.model)
    grammar = body.check_supported()
    owner = api_key_id(request)
    earlier = _earlier(store, owner, body.previous_response_id)
    items = body.input_items()
    plan = body.tool_plan(template.tool_call_format)
    messages = template_messages([*(earlier.conversation if earlier else ()), *items])
    if body.instructions is not None:  # OpenAI does not carry a previous response's instructions over
        messages.insert(0, {"role": "system", "content": body.instructions})
    chat = ChatInput(
        messages,
        template_kwargs=plan.template_kwargs(body.template_kwargs()),
        prefill=plan.prefill,
        images=image_parts(earlier.conversation if earlier else (), items),
    )
    sampling = plan.sampling(
        body.sampling(grammar), supports_grammar=state.generation.info().supports_grammar
    )
    # Every refusal (context length, queue full) happens here, before any byte of the answer is sent.
    generation = await state.generation.start(
        GenerationRequest([chat], [[sampling]], param="input", request_id=f"resp_{uuid.uuid4().hex}")
    )
    parser = None if chat.prefill else state.settings.reasoning_parser  # a forced call is no thinking
    reader = AnswerReader(parser, plan, opens_thinking=generation.prompt.opens_thinking)
    is_stored = body.store and store.is_enabled  # `--responses-store-max-items 0` keeps nothing
    response = _in_progress(body, generation.request_id, model_name, is_stored=is_stored)
    turn = _Turn(state, store, owner, is_stored, earlier, items)
    if body.stream:
        writer = StreamWriter(response)
        return sse_response(
            _events(generation, reader, writer, turn), shutdown_grace_s=state.settings.shutdown_grace
        )
    [result] = await generation.collect(until_disconnected=request.receive)  # a client gone cancels it
    reader.feed(result.text, is_last=True)
    is_cut = _is_cut(result)
    response = response.finished(
        _whole_output(reader, is_cut), _usage(turn, generation, reader), is_cut=is_cut
    )
    _keep(turn, response)
    return JSONResponse(response.wire())


@router.get("/v1/responses/{response_id}", response_model=ResponseObject)
async def get_response(response_id: str, store: StoreDep, request: Request, stream: bool = False) -> Any:
    """A stored response, as it was answered."""
    if stream:
        raise InvalidRequest("replaying a stored response as a stream is not supported", param="stream")
    entry = store.get(api_key_id(request), response_id)
    if entry is None:
        raise _not_found(response_id)
    return JSONResponse(entry.response.wire())


@router.delete("/v1/responses/{response_id}", response_model=DeletedResponse)
async def delete_response(response_id: str, store: StoreDep, request: Request) -> Any:
    if not store.delete(api_key_id(request), response_id):
        raise _not_found(response_id)
    return JSONResponse(DeletedResponse(id=response_id, deleted=True).wire())


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.")


def _earlier(store: ResponseStore, owner: str | None, previous_id: str | None) -> StoredResponse | None:
    if previous_id is None:
        return None
    entry = store.get(owner, previous_id)
    if entry is None:
        raise NotFound(
            f"Previous response with id '{previous_id}' not found (responses are kept in memory, per API "
            "key, while they fit: --responses-store-max-items, --responses-store-max-mb).",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    return entry


def _in_progress(
    body: ResponsesRequest, response_id: str, model_name: str, *, is_stored: bool
) -> ResponseObject:
    """The response as it starts: the request's settings echoed, no output yet."""
    choice = body.tool_choice or "auto"
    fmt = body.text.format if body.text is not None else None
    effort = body.reasoning.effort if body.reasoning is not None else None
    summary = body.reasoning.summary if body.reasoning is not None else None
    return ResponseObject(
        id=response_id,
        created_at=int(time.time()),
        status="in_progress",
        error=None,
        incomplete_details=None,
        instructions=body.instructions,
        max_output_tokens=body.max_output_tokens,
        model=model_name,
        output=[],
        parallel_tool_calls=body.parallel_tool_calls is not False,
        previous_response_id=body.previous_response_id,
        reasoning=ReasoningSettings(effort=effort, summary=summary),
        store=is_stored,
        temperature=1.0 if body.temperature is None else body.temperature,
        text=TextSettings(format=fmt.echo() if fmt is not None else {"type": "text"}),
        tool_choice=choice if isinstance(choice, str) else {"type": "function", "name": choice.name},
        tools=[tool.echo() for tool in body.tools or ()],
        top_p=1.0 if body.top_p is None else body.top_p,
        usage=None,
        user=body.user,
        metadata=body.metadata or {},
    )


def _whole_output(reader: AnswerReader, is_cut: bool) -> list[Any]:
    """A whole answer's items, in the order OpenAI's models give them: reasoning, message, calls. A call
    that turned out malformed is text of the message (`AnswerReader.text`); an answer with nothing at all
    is an empty message. The last item of an answer `max_output_tokens` cut is `incomplete`."""
    output: list[Any] = []
    thinking = reader.thinking()
    if thinking:
        output.append(
            ReasoningOutput(
                id=item_id("reasoning"),
                summary=[],
                content=[ReasoningText(text=thinking)],
                status="completed",
            )
        )
    text = reader.text()
    calls = reader.calls()
    if text or not calls:
        output.append(
            OutputMessage(id=item_id("message"), status="completed", content=[OutputText(text=text)])
        )
    for call in calls:
        output.append(
            FunctionCallOutput(
                id=item_id("function_call"),
                status="completed",
                call_id=call.id,
                name=call.name,
                arguments=call.arguments,
            )
        )
    if is_cut:
        output[-1] = output[-1].model_copy(update={"status": "incomplete"})
    return output


async def _events(
    generation: Generation, reader: AnswerReader, writer: StreamWriter, turn: _Turn
) -> AsyncIterator[Event]:
    for event in writer.start():
        yield event
    last: Delta | None = None
    try:
        async for _, delta in generation.deltas():
            is_last = delta.finish_reason is not None
            for event in writer.feed(reader.feed(delta.text, is_last=is_last)):
                yield event
            if is_last:
                last = delta
    except Exception as exc:  # after the 200: OpenAI's `error` event, then the failed response
        status, body = describe(exc)
        error = body["error"]
        if status >= 500:
            log.error("response %s failed after it started: %s", generation.request_id, error["message"])
        for event in writer.fail(error["code"] or error["type"], error["message"], error["param"]):
            yield event
        return
    events = writer.finish(_usage(turn, generation, reader), is_cut=_is_cut(last))
    _keep(turn, writer.response)  # before the last event: a client may name it in its next request at once
    for event in events:
        yield event


def _is_cut(last: Delta | None) -> bool:
    return last is not None and last.finish_reason == FinishReason.LENGTH


def _usage(turn: _Turn, generation: Generation, reader: AnswerReader) -> ResponseUsage:
    """The request's usage; the reasoning's tokens are its text tokenized again (the engine reports
    generated tokens, not which were thinking), never more than were generated."""
    totals = generation.usage(prompt_per_sequence=False)
    thinking = reader.thinking()
    num_reasoning = len(turn.state.generation.engine.tokenize(thinking)) if thinking else 0
    return ResponseUsage.from_totals(totals, num_reasoning=min(num_reasoning, totals.completion_tokens))


def _keep(turn: _Turn, response: ResponseObject) -> None:
    if turn.is_stored:
        output = as_input_items(item.wire() for item in response.output)
        turn.store.put(turn.owner, response, turn.earlier, [*turn.items, *output])
