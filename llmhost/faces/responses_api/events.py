"""A streamed response: OpenAI's event sequence, numbered, as the `openai` SDK's `responses.stream`
accumulates it.

`response.created` and `response.in_progress` first; then per output item `response.output_item.added`,
its content (a reasoning item: `response.content_part.added`, `response.reasoning_text.delta`s,
`.reasoning_text.done`, `.content_part.done`; a message: the same with `output_text`; a function call:
`response.function_call_arguments.delta`s and `.done`) and `response.output_item.done`; last
`response.completed`, or `response.incomplete` when `max_output_tokens` cut the answer. An error after
the start is an `error` event, then `response.failed`. Every event carries its `sequence_number`, and its
name on the `event:` line, as OpenAI sends them.

Items open and close as the answer's pieces arrive (`faces/answer.py`): thinking, text and each tool
call are items of their own, in the order the model wrote them. A stream cannot take back what it sent,
so a call whose arguments broke after its name went out stays a function call here (the whole answer
keeps such a call as text).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from llmhost.faces.answer import Pieces

from .objects import (
    FunctionCallOutput,
    OutputItem,
    OutputMessage,
    OutputText,
    ReasoningOutput,
    ReasoningText,
    ResponseObject,
    ResponseUsage,
    WireModel,
)

ItemKind = Literal["reasoning", "message", "function_call"]


def item_id(kind: ItemKind) -> str:
    """OpenAI's id style per item kind (`rs_…`, `msg_…`, `fc_…`)."""
    prefix = {"reasoning": "rs", "message": "msg", "function_call": "fc"}[kind]
    return f"{prefix}_{uuid.uuid4().hex}"


# -- events ------------------------------------------------------------------------------------------
class _ResponseEvent(WireModel):
    type: str  # first on the wire; each event narrows it
    sequence_number: int
    response: ResponseObject


class ResponseCreatedEvent(_ResponseEvent):
    type: Literal["response.created"] = "response.created"


class ResponseInProgressEvent(_ResponseEvent):
    type: Literal["response.in_progress"] = "response.in_progress"


class ResponseCompletedEvent(_ResponseEvent):
    type: Literal["response.completed"] = "response.completed"


class ResponseIncompleteEvent(_ResponseEvent):
    """The last event when `max_output_tokens` (or the context) cut the answer."""

    type: Literal["response.incomplete"] = "response.incomplete"


class ResponseFailedEvent(_ResponseEvent):
    type: Literal["response.failed"] = "response.failed"


class _ItemEvent(WireModel):
    type: str  # first on the wire; each event narrows it
    sequence_number: int
    output_index: int
    item: OutputItem


class OutputItemAddedEvent(_ItemEvent):
    type: Literal["response.output_item.added"] = "response.output_item.added"


class OutputItemDoneEvent(_ItemEvent):
    type: Literal["response.output_item.done"] = "response.output_item.done"


class _ContentEvent(WireModel):
    type: str  # first on the wire; each event narrows it
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int


class ContentPartAddedEvent(_ContentEvent):
    type: Literal["response.content_part.added"] = "response.content_part.added"
    part: OutputText | ReasoningText


class ContentPartDoneEvent(_ContentEvent):
    type: Literal["response.content_part.done"] = "response.content_part.done"
    part: OutputText | ReasoningText


class OutputTextDeltaEvent(_ContentEvent):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    delta: str
    logprobs: list[Any] = []


class OutputTextDoneEvent(_ContentEvent):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    text: str
    logprobs: list[Any] = []


class ReasoningTextDeltaEvent(_ContentEvent):
    type: Literal["response.reasoning_text.delta"] = "response.reasoning_text.delta"
    delta: str


class ReasoningTextDoneEvent(_ContentEvent):
    type: Literal["response.reasoning_text.done"] = "response.reasoning_text.done"
    text: str


class FunctionCallArgumentsDeltaEvent(WireModel):
    type: Literal["response.function_call_arguments.delta"] = "response.function_call_arguments.delta"
    sequence_number: int
    item_id: str
    output_index: int
    delta: str


class FunctionCallArgumentsDoneEvent(WireModel):
    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    sequence_number: int
    item_id: str
    output_index: int
    arguments: str


class ErrorEvent(WireModel):
    type: Literal["error"] = "error"
    sequence_number: int
    code: str | None
    message: str
    param: str | None


StreamEvent = (
    ResponseCreatedEvent
    | ResponseInProgressEvent
    | OutputItemAddedEvent
    | ContentPartAddedEvent
    | OutputTextDeltaEvent
    | ReasoningTextDeltaEvent
    | FunctionCallArgumentsDeltaEvent
    | OutputTextDoneEvent
    | ReasoningTextDoneEvent
    | FunctionCallArgumentsDoneEvent
    | ContentPartDoneEvent
    | OutputItemDoneEvent
    | ResponseCompletedEvent
    | ResponseIncompleteEvent
    | ResponseFailedEvent
    | ErrorEvent
)
Event = tuple[str, str]  # (event name, data) for server/sse.py


# -- the writer --------------------------------------------------------------------------------------
@dataclass
class _OpenItem:
    kind: ItemKind
    index: int
    id: str
    text: str = ""  # the reasoning, the message text, or the call's arguments so far
    call_id: str = ""
    name: str = ""

    def item(self, status: Literal["in_progress", "completed", "incomplete"]) -> OutputItem:
        if self.kind == "reasoning":
            content = [ReasoningText(text=self.text)] if status != "in_progress" else []
            return ReasoningOutput(id=self.id, summary=[], content=content, status=status)
        if self.kind == "message":
            content = [OutputText(text=self.text)] if status != "in_progress" else []
            return OutputMessage(id=self.id, status=status, content=content)
        return FunctionCallOutput(
            id=self.id,
            status=status,
            call_id=self.call_id,
            name=self.name,
            arguments=self.text if status != "in_progress" else "",
        )


@dataclass
class StreamWriter:
    """The events of one streamed response, from the in-progress `response` and the answer's pieces."""

    response: ResponseObject
    output: list[OutputItem] = field(default_factory=list)  # finished items, in order
    _open: _OpenItem | None = None
    _num_events: int = 0

    def start(self) -> list[Event]:
        return [
            self._event(ResponseCreatedEvent, response=self.response),
            self._event(ResponseInProgressEvent, response=self.response),
        ]

    def feed(self, pieces: Pieces) -> list[Event]:
        out: list[Event] = []
        if pieces.thinking:
            out += self._enter("reasoning")
            out.append(self._text_delta(ReasoningTextDeltaEvent, pieces.thinking))
        if pieces.text:
            out += self._enter("message")
            out.append(self._text_delta(OutputTextDeltaEvent, pieces.text))
        for piece in pieces.calls:
            if piece.name is not None:  # a call starts: an item of its own
                out += self._enter("function_call", call_id=piece.id or "", name=piece.name)
            if piece.arguments and self._open is not None:
                self._open.text += piece.arguments
                out.append(
                    self._event(
                        FunctionCallArgumentsDeltaEvent,
                        item_id=self._open.id,
                        output_index=self._open.index,
                        delta=piece.arguments,
                    )
                )
        return out

    def finish(self, usage: ResponseUsage, *, is_cut: bool) -> list[Event]:
        """Close the open item (`incomplete` when the answer was cut) and end with the finished response;
        an answer with no item at all gets an empty message, as an answer with no text still is one."""
        out = [] if self.output or self._open else self._enter("message")
        out += self._close("incomplete" if is_cut else "completed")
        self.response = self.response.finished(list(self.output), usage, is_cut=is_cut)
        last = ResponseIncompleteEvent if is_cut else ResponseCompletedEvent
        return out + [self._event(last, response=self.response)]

    def fail(self, code: str | None, message: str, param: str | None) -> list[Event]:
        """An error after the start: the `error` event, then the failed response with what was sent."""
        if self._open is not None:
            self.output.append(self._open.item("incomplete"))
            self._open = None
        self.response = self.response.failed(list(self.output), message)
        return [
            self._event(ErrorEvent, code=code, message=message, param=param),
            self._event(ResponseFailedEvent, response=self.response),
        ]

    # -- items -----------------------------------------------------------------------------------------
    def _enter(self, kind: ItemKind, **call: str) -> list[Event]:
        if self._open is not None and self._open.kind == kind and kind != "function_call":
            return []
        out = self._close("completed")
        self._open = _OpenItem(kind, len(self.output), item_id(kind), **call)
        out.append(
            self._event(
                OutputItemAddedEvent, output_index=self._open.index, item=self._open.item("in_progress")
            )
        )
        if kind != "function_call":
            part = ReasoningText(text="") if kind == "reasoning" else OutputText(text="")
            out.append(self._content_event(self._open, ContentPartAddedEvent, part=part))
        return out

    def _close(self, status: Literal["completed", "incomplete"]) -> list[Event]:
        opened, self._open = self._open, None
        if opened is None:
            return []
        out: list[Event] = []
        if opened.kind == "function_call":
            done = dict(item_id=opened.id, output_index=opened.index, arguments=opened.text)
            out.append(self._event(FunctionCallArgumentsDoneEvent, **done))
        elif opened.kind == "reasoning":
            out.append(self._content_event(opened, ReasoningTextDoneEvent, text=opened.text))
            out.append(
                self._content_event(opened, ContentPartDoneEvent, part=ReasoningText(text=opened.text))
            )
        else:
            out.append(self._content_event(opened, OutputTextDoneEvent, text=opened.text))
            out.append(self._content_event(opened, ContentPartDoneEvent, part=OutputText(text=opened.text)))
        item = opened.item(status)
        self.output.append(item)
        out.append(self._event(OutputItemDoneEvent, output_index=opened.index, item=item))
        return out

    # -- events ----------------------------------------------------------------------------------------
    def _text_delta(self, event: type[_ContentEvent], delta: str) -> Event:
        assert self._open is not None
        self._open.text += delta
        return self._content_event(self._open, event, delta=delta)

    def _content_event(self, item: _OpenItem, event: type[_ContentEvent], **fields: Any) -> Event:
        return self._event(event, item_id=item.id, output_index=item.index, content_index=0, **fields)

    def _event(self, event: type[WireModel], **fields: Any) -> Event:
        model = event(sequence_number=self._num_events, **fields)
        self._num_events += 1
        return model.type, model.sse_data()  # type: ignore[attr-defined]
