"""Anthropic Messages API wire schemas (answers): the `message` object, its content blocks and usage,
the events of a stream, `count_tokens`' answer and the error shape.

Every field is always sent (`null` included), as Anthropic's API does, so clients that index keys
directly find them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from llmhost.types import Usage

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


# -- content blocks ----------------------------------------------------------------------------------
class TextContent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ThinkingContent(BaseModel):
    type: Literal["thinking"] = "thinking"
    thinking: str
    # Claude's signature lets Anthropic verify thinking sent back; a local model's thinking has none.
    signature: str = ""


class ToolUseContent(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


ContentBlock = Annotated[TextContent | ThinkingContent | ToolUseContent, Field(discriminator="type")]


# -- the message -------------------------------------------------------------------------------------
class MessageUsage(BaseModel):
    """Anthropic counts cache reads apart: the prompt is `input_tokens + cache_read_input_tokens`."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = Field(
        None, description="Prompt tokens served from the prefix cache; null when the engine does not say."
    )

    @classmethod
    def from_totals(cls, totals: Usage) -> MessageUsage:
        cached = totals.cached_tokens
        return cls(
            input_tokens=totals.prompt_tokens - (cached or 0),
            output_tokens=totals.completion_tokens,
            cache_read_input_tokens=cached,
        )


class MessageResponse(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ContentBlock]
    stop_reason: StopReason | None
    stop_sequence: str | None = Field(description="The stop sequence that ended the answer, if one did.")
    usage: MessageUsage


class CountTokensResponse(BaseModel):
    input_tokens: int


# -- errors ------------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    type: Literal["error"] = "error"
    error: ErrorDetail


# Anthropic's error types by HTTP status (https://docs.anthropic.com/en/api/errors).
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",  # no model loaded yet, or the engine is restarting: retry later
    504: "timeout_error",
}


def error_body(message: str, status: int = 400) -> dict[str, Any]:
    """This face's error shape; the type follows the status."""
    type_ = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return ErrorResponse(error=ErrorDetail(type=type_, message=message)).model_dump()


# -- stream events -----------------------------------------------------------------------------------
class TextDelta(BaseModel):
    type: Literal["text_delta"] = "text_delta"
    text: str


class ThinkingDelta(BaseModel):
    type: Literal["thinking_delta"] = "thinking_delta"
    thinking: str


class InputJsonDelta(BaseModel):
    type: Literal["input_json_delta"] = "input_json_delta"
    partial_json: str


class MessageStartEvent(BaseModel):
    """The first event: the message with no content yet, and the prompt's tokens as its input."""

    type: Literal["message_start"] = "message_start"
    message: MessageResponse


class ContentBlockStartEvent(BaseModel):
    """A block begins (empty; a tool_use block with its id and name, `input` `{}`)."""

    type: Literal["content_block_start"] = "content_block_start"
    index: int
    content_block: ContentBlock


class ContentBlockDeltaEvent(BaseModel):
    """More of the open block: text, thinking, or a piece of a tool input's JSON text."""

    type: Literal["content_block_delta"] = "content_block_delta"
    index: int
    delta: TextDelta | ThinkingDelta | InputJsonDelta


class ContentBlockStopEvent(BaseModel):
    """The block at `index` is complete; the next one, if any, starts after it."""

    type: Literal["content_block_stop"] = "content_block_stop"
    index: int


class MessageDelta(BaseModel):
    stop_reason: StopReason | None
    stop_sequence: str | None


class MessageDeltaEvent(BaseModel):
    """The end of the answer; `usage` holds the final totals (they replace message_start's)."""

    type: Literal["message_delta"] = "message_delta"
    delta: MessageDelta
    usage: MessageUsage


class MessageStopEvent(BaseModel):
    """The last event of a stream that ended well."""

    type: Literal["message_stop"] = "message_stop"


StreamEvent = (
    MessageStartEvent
    | ContentBlockStartEvent
    | ContentBlockDeltaEvent
    | ContentBlockStopEvent
    | MessageDeltaEvent
    | MessageStopEvent
)


def sse_event(event: StreamEvent) -> tuple[str, str]:
    """`(event name, data)`: Anthropic's clients dispatch on the `event:` line, which repeats `type`."""
    return event.type, event.model_dump_json()
