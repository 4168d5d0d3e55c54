"""OpenAI wire schemas (responses): chat completions and their chunks, legacy completions and their
chunks, the model list, and the llmhost extensions of the code agent loop.

Field order is the order on the wire. Fields without a default are always sent (`null` included);
fields with one are sent only where set (see `ResponseModel`), as vLLM omits them.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field

from llmhost.faces.wire import ResponseModel, error_responses
from llmhost.types import Usage

FinishReason = Literal["stop", "length", "tool_calls", "abort"]
StopReason = str | int | None  # the stop string or token id that ended the sequence; null: none did


# -- usage -----------------------------------------------------------------------------------------
class PromptTokensDetails(ResponseModel):
    cached_tokens: int = Field(description="Prompt tokens served from the prefix cache.")


class CompletionUsage(ResponseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = Field(
        None, description="Sent when the engine reports prefix-cache hits."
    )

    @classmethod
    def from_totals(cls, totals: Usage, **extensions: Any) -> Self:
        """The wire usage of internal totals (plus a subclass's own fields)."""
        if totals.cached_tokens is not None:  # as OpenAI and vLLM: only when the engine says
            extensions["prompt_tokens_details"] = PromptTokensDetails(cached_tokens=totals.cached_tokens)
        return cls(
            prompt_tokens=totals.prompt_tokens,
            completion_tokens=totals.completion_tokens,
            total_tokens=totals.total_tokens,
            **extensions,
        )


class CodeLoopUsage(CompletionUsage):
    """`completion_tokens` counts the model's tokens; the rest are llmhost extensions."""

    tool_tokens: int = Field(description="Tokens of the observations appended to the transcript.")
    num_turns: int = Field(description="Tool turns over all choices.")
    loop_overhead_s: float = Field(description="Time spent outside generation (running tools, re-prefill).")
    prefilled_tokens: int | None = Field(
        None, description="Context tokens computed over every turn; sent when every loop reported it."
    )


# -- logprobs --------------------------------------------------------------------------------------
class ChatTopLogprob(ResponseModel):
    token: str
    logprob: float
    bytes: list[int]


class ChatTokenLogprob(ResponseModel):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[ChatTopLogprob]


class ChatLogprobs(ResponseModel):
    content: list[ChatTokenLogprob]


class CompletionLogprobs(ResponseModel):
    tokens: list[str]
    token_logprobs: list[float | None] = Field(
        description="With `echo`, the prompt's first token has null: nothing precedes it."
    )
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class PromptLogprob(ResponseModel):
    """vLLM's `Logprob`: one token's log-probability at a prompt position."""

    logprob: float
    rank: int | None = Field(description="1 for the most likely token at the position.")
    decoded_token: str | None


# `prompt_logprobs`: per prompt token, null for the first, else {token id: PromptLogprob} holding the
# prompt's own token and the k most likely (vLLM's shape).
PromptLogprobs = list[dict[str, PromptLogprob] | None]


class Envelope(ResponseModel):
    """What every answer and chunk starts with; `id`, `created` and `model` are the same in every
    chunk of one stream."""

    id: str
    object: str
    created: int = Field(description="Unix time in seconds.")
    model: str


# -- chat completions ------------------------------------------------------------------------------
class ToolCallFunction(ResponseModel):
    name: str
    arguments: str = Field(description="The arguments as JSON text.")


class ToolCall(ResponseModel):
    id: str
    type: Literal["function"]
    function: ToolCallFunction


class ChatCompletionMessage(ResponseModel):
    role: Literal["assistant"]
    content: str | None = Field(description="null when a reasoning model was cut before its answer.")
    # With --reasoning-parser: the thinking, under both names (vLLM's older and newer one).
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] | None = Field(None, description="Sent when the answer calls tools.")


class ChatCompletionChoice(ResponseModel):
    index: int
    message: ChatCompletionMessage
    logprobs: ChatLogprobs | None
    finish_reason: FinishReason | None
    stop_reason: StopReason
    token_ids: list[int] | None = Field(None, description="With `return_token_ids`: the generated ids.")


class ChatCompletionResponse(Envelope):
    object: Literal["chat.completion"]
    choices: list[ChatCompletionChoice]
    usage: CompletionUsage
    prompt_logprobs: PromptLogprobs | None = Field(None, description="With `prompt_logprobs` (vLLM's).")
    prompt_token_ids: list[int] | None = Field(None, description="With `return_token_ids`: the prompt's ids.")


class CodeLoopChoice(ChatCompletionChoice):
    """`message.content` is the whole transcript: the model's text with the observations inline."""

    num_turns: int = Field(description="Tool turns of this choice (llmhost extension).")
    tool_results: list[dict[str, Any]] = Field(
        description="Each tool run's result as the tool backend reported it (llmhost extension)."
    )


class CodeLoopCompletionResponse(ChatCompletionResponse):
    """A chat completion answered by the code agent loop (`--code-tools` or `code_tools: true`)."""

    choices: list[CodeLoopChoice]  # type: ignore[assignment]
    usage: CodeLoopUsage  # type: ignore[assignment]


# -- chat completion chunks ------------------------------------------------------------------------
class DeltaFunction(ResponseModel):
    name: str | None = Field(None, description="Sent in a call's first delta.")
    arguments: str = Field(description="The next piece of the arguments' JSON text.")


class DeltaToolCall(ResponseModel):
    index: int
    # A call's first delta: its id, type and name, with empty arguments; then arguments only.
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunction


class ChatCompletionDelta(ResponseModel):
    """Only the parts a delta has are sent: `{}` is a delta with nothing new."""

    role: Literal["assistant"] | None = Field(None, description="The first delta of each choice.")
    reasoning_content: str | None = None
    reasoning: str | None = None
    content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None

    @classmethod
    def of_text(cls, reasoning: str, content: str) -> ChatCompletionDelta:
        """The thinking (under both names) and the answer text, each only when there is some."""
        fields = {}
        if reasoning:
            fields["reasoning_content"] = fields["reasoning"] = reasoning
        if content:
            fields["content"] = content
        return cls(**fields)

    @property
    def is_empty(self) -> bool:
        return not self.model_fields_set


class ChatChunkChoice(ResponseModel):
    index: int
    delta: ChatCompletionDelta
    logprobs: ChatLogprobs | None = Field(
        None, description="Always sent, except in the code loop's first (role) delta."
    )
    finish_reason: FinishReason | None
    stop_reason: StopReason = Field(None, description="Sent with the choice's last delta.")
    token_ids: list[int] | None = Field(None, description="With `return_token_ids`: this delta's ids.")


class ChatCompletionChunk(Envelope):
    object: Literal["chat.completion.chunk"]
    choices: list[ChatChunkChoice] = Field(description="Empty in the usage chunk.")
    usage: CompletionUsage | None = Field(
        None, description="Only in the last chunk, with `stream_options.include_usage`."
    )
    prompt_token_ids: list[int] | None = Field(
        None, description="With `return_token_ids`: in each choice's first (role) chunk."
    )


class CodeLoopChunkChoice(ChatChunkChoice):
    num_turns: int | None = Field(None, description="Sent with the choice's last delta (llmhost extension).")


class CodeLoopChunk(ChatCompletionChunk):
    choices: list[CodeLoopChunkChoice]  # type: ignore[assignment]
    usage: CodeLoopUsage | None = None  # type: ignore[assignment]


# -- completions -----------------------------------------------------------------------------------
class CompletionChoice(ResponseModel):
    index: int
    text: str = Field(description="With `echo`, the prompt and then the completion.")
    logprobs: CompletionLogprobs | None
    finish_reason: FinishReason | None
    stop_reason: StopReason
    prompt_token_ids: list[int] | None = Field(None, description="With `return_token_ids`: the prompt's ids.")
    token_ids: list[int] | None = Field(None, description="With `return_token_ids`: the generated ids.")
    prompt_logprobs: PromptLogprobs | None = Field(
        None, description="With `prompt_logprobs`, or `echo` with `logprobs` (vLLM's)."
    )


class CompletionResponse(Envelope):
    object: Literal["text_completion"]
    choices: list[CompletionChoice]
    usage: CompletionUsage


class CompletionChunkChoice(ResponseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: FinishReason | None
    prompt_token_ids: list[int] | None = Field(
        None, description="With `return_token_ids`: in each choice's first chunk."
    )
    token_ids: list[int] | None = Field(None, description="With `return_token_ids`: this chunk's ids.")


class CompletionChunk(Envelope):
    object: Literal["text_completion"]
    choices: list[CompletionChunkChoice] = Field(description="Empty in the usage chunk.")
    usage: CompletionUsage | None = Field(
        None, description="Only in the last chunk, with `stream_options.include_usage`."
    )


# -- models and errors -----------------------------------------------------------------------------
class ModelCard(ResponseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    max_model_len: int | None = Field(description="null while the model is not loaded.")
    root: str | None = Field(None, description="Sent for an alias: the name it stands for.")
    input_modalities: list[Literal["text", "image"]] | None = Field(
        None,
        description='What the model reads, once loaded: ["text"], or ["text", "image"] for a vision model.',
    )


class ModelList(ResponseModel):
    object: Literal["list"]
    data: list[ModelCard] = Field(description="The served name first, then its aliases.")


class ErrorDetail(ResponseModel):
    message: str
    type: str
    param: str | None
    code: str | int | None


class ErrorResponse(ResponseModel):
    error: ErrorDetail


STREAM_END = 'then `data: [DONE]`; an error after the 200 is a last `data: {"error": {…}}` event'
# Every error of these routes answers in OpenAI's shape (server/errors.py), bad input as 400.
ERRORS = error_responses(ErrorResponse, '`{"error": {message, type, param, code}}`')
