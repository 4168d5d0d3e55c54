"""`POST /v1/chat/completions`.

With `--reasoning-parser`, each choice's thinking goes to `reasoning_content` (and `reasoning`, the
newer vLLM name; both are sent so clients of either generation read it) and `content` keeps the answer.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from llmhost.conversation.reasoning import ReasoningParserName, ReasoningSplitter, split_reasoning
from llmhost.errors import InvalidRequest
from llmhost.faces.wire import FaceRouter, event_stream
from llmhost.pipeline import ChatInput, Generation, GenerationRequest
from llmhost.server.deps import StateDep
from llmhost.server.item_limit import ItemLimitRoute
from llmhost.server.sse import sse_response
from llmhost.types import TokenLogprob

from . import code_loop
from .encode import ChunkEncoder, finish_reason
from .logprobs import chat_logprobs, prompt_logprobs_wire
from .responses import (
    ERRORS,
    STREAM_END,
    ChatChunkChoice,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionDelta,
    ChatCompletionMessage,
    ChatCompletionResponse,
    CodeLoopChunk,
    CodeLoopCompletionResponse,
    CompletionUsage,
    ErrorResponse,
)
from .schemas import ChatCompletionRequest
from .tool_calls import ToolPlan, ToolStream

router = FaceRouter(tags=["openai"], route_class=ItemLimitRoute, responses=ERRORS)


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse | CodeLoopCompletionResponse,
    responses=event_stream(
        ChatCompletionChunk | CodeLoopChunk | ErrorResponse,
        f"A chat completion; with `stream: true`, its chunks, {STREAM_END}.",
    ),
)
async def chat_completions(body: ChatCompletionRequest, state: StateDep, request: Request) -> Any:
    template = state.require_loaded()
    model_name = state.resolve_model(body.model)
    body.check_supported()
    if body.n > state.settings.max_n:
        raise InvalidRequest(f"'n' must be at most {state.settings.max_n}", param="n")
    tool_plan = ToolPlan.from_request(
        body.tools, body.tool_choice, body.parallel_tool_calls, tool_format=template.tool_call_format
    )
    chat = ChatInput(
        body.template_messages(state.settings.prompt_templates),  # a named prompt template rewrites them
        template_kwargs=tool_plan.template_kwargs(body.chat_template_kwargs),
        add_generation_prompt=body.add_generation_prompt,
        prefill=tool_plan.prefill,  # a forced call's start
        images=body.image_parts(),
    )
    if code_loop.is_requested(body, state):  # --code-tools: generate, run code, feed it back (own module)
        for field in ("return_token_ids", "prompt_logprobs"):  # a transcript is many prompts and answers
            if getattr(body, field) not in (None, False):
                raise InvalidRequest(f"'{field}' is not supported with the code loop yet", param=field)
        return await code_loop.chat_completion(body, state, request, model_name, chat)
    supports_grammar = state.generation.info().supports_grammar
    sampling = [
        tool_plan.sampling(
            body.sampling(
                max_tokens=body.requested_max_tokens,
                logprobs=body.requested_logprobs,
                choice=i,
                prompt_logprobs=body.prompt_logprobs if i == 0 else None,  # one prompt: scored once
            ),
            supports_grammar=supports_grammar,
        )
        for i in range(body.n)
    ]
    # Every refusal (context length, queue full) happens here, before any byte of the response is sent.
    generation = await state.generation.start(
        GenerationRequest(
            [chat],
            [sampling],
            request_id=f"chatcmpl-{uuid.uuid4().hex}",
        )
    )
    prompt = generation.prompt
    parser = state.settings.reasoning_parser
    created = int(time.time())
    if body.stream:
        splitters = None
        if parser is not None:
            splitters = [ReasoningSplitter(parser, prompt_opened=prompt.opens_thinking) for _ in sampling]
        tool_streams = None
        if tool_plan.is_parsing:
            tool_streams = [ToolStream(tool_plan, prompt.opens_thinking) for _ in sampling]
        return sse_response(
            _stream_chunks(
                generation,
                created,
                model_name,
                body.include_usage,
                splitters,
                tool_streams,
                with_token_ids=body.return_token_ids,
            ),
            done="[DONE]",
            shutdown_grace_s=state.settings.shutdown_grace,
        )
    results = await generation.collect(until_disconnected=request.receive)
    answers = [  # (message, finish_reason) per choice, tool calls parsed out of the content
        tool_plan.message(
            _message(tool_plan.answer_prefix(prompt.opens_thinking) + r.text, parser, prompt.opens_thinking),
            finish_reason(r.finish_reason),
        )
        for r in results
    ]
    return ChatCompletionResponse(
        id=generation.request_id,
        object="chat.completion",
        created=created,
        model=model_name,
        choices=[
            ChatCompletionChoice(
                index=i,
                message=answers[i][0],
                logprobs=chat_logprobs(r.logprobs),
                finish_reason=answers[i][1],
                stop_reason=r.stop_reason,
                **({"token_ids": r.token_ids} if body.return_token_ids else {}),
            )
            for i, r in enumerate(results)
        ],
        usage=CompletionUsage.from_totals(generation.usage(prompt_per_sequence=False)),
        **_prompt_fields(body, prompt.token_ids, results[0].prompt_logprobs),
    )


def _prompt_fields(
    body: ChatCompletionRequest, token_ids: list[int], scores: list[TokenLogprob | None] | None
) -> dict[str, Any]:
    """vLLM's top-level extensions: the prompt's token ids and log-probabilities, where asked."""
    fields: dict[str, Any] = {}
    if body.prompt_logprobs is not None and scores is not None:
        fields["prompt_logprobs"] = prompt_logprobs_wire(scores)
    if body.return_token_ids:
        fields["prompt_token_ids"] = token_ids
    return fields


def _message(text: str, parser: ReasoningParserName | None, prompt_opened: bool) -> ChatCompletionMessage:
    if parser is None:
        return ChatCompletionMessage(role="assistant", content=text)
    reasoning, content = split_reasoning(text, prompt_opened, parser)
    return ChatCompletionMessage(
        role="assistant",
        # As vLLM: no answer text after the thinking (cut by max_tokens) is null, not "".
        content=None if reasoning is not None and not content else content,
        reasoning_content=reasoning,
        reasoning=reasoning,
    )


def _split(text: str, splitter: ReasoningSplitter | None, is_last: bool) -> tuple[str, str]:
    """One delta's text as (reasoning, content)."""
    if splitter is None:
        return "", text
    reasoning, content = splitter.feed(text)
    if is_last:
        tail_reasoning, tail_content = splitter.finish()
        reasoning, content = reasoning + tail_reasoning, content + tail_content
    return reasoning, content


async def _stream_chunks(
    generation: Generation,
    created: int,
    model_name: str,
    include_usage: bool,
    splitters: list[ReasoningSplitter] | None = None,
    tool_streams: list[ToolStream] | None = None,
    *,
    with_token_ids: bool = False,
) -> AsyncIterator[str]:
    """Chunks of every choice. With `with_token_ids` (`return_token_ids`), as vLLM: each role chunk has
    the prompt's `prompt_token_ids` and each later chunk its delta's `token_ids`; a delta whose text is
    held back (half a tag, a possible stop string) still sends its ids, in an empty delta."""
    chunk = ChunkEncoder(
        ChatCompletionChunk, generation.request_id, "chat.completion.chunk", created, model_name
    )
    prompt_ids = {"prompt_token_ids": generation.prompt.token_ids} if with_token_ids else {}
    for i in range(len(generation.streams)):  # the first delta of each choice carries the role
        role = ChatCompletionDelta(role="assistant", content="")
        yield chunk([ChatChunkChoice(index=i, delta=role, logprobs=None, finish_reason=None)], **prompt_ids)
    async for index, delta in generation.deltas():
        splitter = splitters[index] if splitters is not None else None
        is_last = delta.finish_reason is not None
        tools = tool_streams[index] if tool_streams is not None else None
        reasoning, content = _split(tools.text(delta.text) if tools else delta.text, splitter, is_last)
        # A tool call's start and its arguments go out as deltas of their own.
        if tools:
            messages = tools.messages(reasoning, content, is_last)
        else:
            messages = [ChatCompletionDelta.of_text(reasoning, content)]
        has_ids = with_token_ids and bool(delta.token_ids)
        if all(m.is_empty for m in messages) and not is_last and delta.logprobs is None and not has_ids:
            continue  # nothing to say yet (a splitter may hold back half a tag)
        messages = messages or [ChatCompletionDelta()]
        for j, message in enumerate(messages):
            is_final = is_last and j == len(messages) - 1
            reason = finish_reason(delta.finish_reason) if is_final else None
            final: dict[str, Any] = {"stop_reason": delta.stop_reason} if is_final else {}
            if with_token_ids:  # the delta's ids go with its first message
                final["token_ids"] = delta.token_ids if j == 0 else []
            choice = ChatChunkChoice(
                index=index,
                delta=message,
                logprobs=chat_logprobs(delta.logprobs) if j == 0 else None,
                finish_reason=tools.finish_reason(reason) if tools and is_final else reason,
                **final,
            )
            yield chunk([choice])
    if include_usage:
        yield chunk([], CompletionUsage.from_totals(generation.usage(prompt_per_sequence=False)))
