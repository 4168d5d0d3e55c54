"""Responses API wire schemas (answers): the response object, its output items and usage.

Field names follow OpenAI's (the `openai` SDK's `types/responses`). Every field is always sent, `null`
included, as OpenAI sends them (`WireModel`), so clients that index keys directly find them.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import Field

from llmhost.faces.wire import ResponseModel
from llmhost.types import Usage

ItemStatus = Literal["in_progress", "completed", "incomplete"]
ResponseStatus = Literal["in_progress", "completed", "incomplete", "failed", "cancelled"]


class WireModel(ResponseModel):
    """A `ResponseModel` whose every field is sent: constants (`type`, `object`…) have defaults here."""

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# -- output items ------------------------------------------------------------------------------------
class OutputText(WireModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list, description="Always empty.")
    logprobs: list[Any] = Field(default_factory=list, description="Always empty.")


class ReasoningText(WireModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class OutputMessage(WireModel):
    id: str
    type: Literal["message"] = "message"
    status: ItemStatus
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class ReasoningOutput(WireModel):
    """The model's thinking (split with `--reasoning-parser`), in plain text: there are no summaries and
    nothing is encrypted."""

    id: str
    type: Literal["reasoning"] = "reasoning"
    summary: list[Any] = Field(description="Always empty.")
    content: list[ReasoningText]
    status: ItemStatus


class FunctionCallOutput(WireModel):
    """A call the client is to run; send its result back as a `function_call_output` with `call_id`."""

    id: str
    type: Literal["function_call"] = "function_call"
    status: ItemStatus
    call_id: str
    name: str
    arguments: str = Field(description="The arguments as JSON text.")


OutputItem = Annotated[OutputMessage | ReasoningOutput | FunctionCallOutput, Field(discriminator="type")]


# -- usage -------------------------------------------------------------------------------------------
class InputTokensDetails(WireModel):
    cached_tokens: int = Field(description="Input tokens served from the prefix cache (0 when not reported).")


class OutputTokensDetails(WireModel):
    reasoning_tokens: int = Field(description="Output tokens of the reasoning text.")


class ResponseUsage(WireModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int

    @classmethod
    def from_totals(cls, totals: Usage, *, num_reasoning: int) -> ResponseUsage:
        return cls(
            input_tokens=totals.prompt_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=totals.cached_tokens or 0),
            output_tokens=totals.completion_tokens,
            output_tokens_details=OutputTokensDetails(reasoning_tokens=num_reasoning),
            total_tokens=totals.total_tokens,
        )


# -- the response ------------------------------------------------------------------------------------
class IncompleteDetails(WireModel):
    reason: Literal["max_output_tokens"]


class ResponseError(WireModel):
    code: str
    message: str


class TextSettings(WireModel):
    format: dict[str, Any]


class ReasoningSettings(WireModel):
    effort: str | None
    summary: str | None


class ResponseObject(WireModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int = Field(description="Unix time in seconds.")
    status: ResponseStatus
    background: bool = False
    error: ResponseError | None
    incomplete_details: IncompleteDetails | None
    instructions: str | None
    max_output_tokens: int | None
    model: str
    output: list[OutputItem]
    parallel_tool_calls: bool
    previous_response_id: str | None
    reasoning: ReasoningSettings
    store: bool
    temperature: float
    text: TextSettings
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    top_p: float
    truncation: Literal["disabled"] = "disabled"
    usage: ResponseUsage | None = Field(description="null until the response is finished.")
    user: str | None
    metadata: dict[str, str]
    completed_at: int | None = Field(None, description="Unix time in seconds; null until completed.")

    def finished(
        self,
        output: list[Any],
        usage: ResponseUsage,
        *,
        is_cut: bool,
    ) -> ResponseObject:
        """This (in-progress) response, finished with `output`: `incomplete` when `max_output_tokens`
        (or the context) cut the answer."""
        update: dict[str, Any] = {"output": output, "usage": usage}
        if is_cut:
            update.update(
                status="incomplete", incomplete_details=IncompleteDetails(reason="max_output_tokens")
            )
        else:
            update.update(status="completed", completed_at=int(time.time()))
        return self.model_copy(update=update)

    def failed(self, output: list[Any], message: str) -> ResponseObject:
        return self.model_copy(
            update={
                "status": "failed",
                "output": output,
                "error": ResponseError(code="server_error", message=message),
            }
        )


class DeletedResponse(WireModel):
    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: bool
