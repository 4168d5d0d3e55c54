"""`POST /v1/completions` (raw prompts, no chat template) and `GET /v1/models`."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request

from llmhost.errors import InvalidRequest
from llmhost.faces.wire import FaceRouter, event_stream
from llmhost.pipeline import Generation, GenerationRequest, TextInput, TokenInput
from llmhost.server.deps import StateDep
from llmhost.server.item_limit import ItemLimitRoute
from llmhost.server.sse import sse_response
from llmhost.types import TokenLogprob

from .encode import ChunkEncoder, finish_reason
from .logprobs import completion_logprobs, prompt_logprobs_wire
from .responses import (
    ERRORS,
    STREAM_END,
    CompletionChoice,
    CompletionChunk,
    CompletionChunkChoice,
    CompletionLogprobs,
    CompletionResponse,
    CompletionUsage,
    ErrorResponse,
    ModelCard,
    ModelList,
)
from .schemas import CompletionRequest

router = FaceRouter(tags=["openai"], route_class=ItemLimitRoute, responses=ERRORS)


@router.get("/v1/models")
async def list_models(state: StateDep) -> ModelList:
    info = state.engine.info() if state.is_loaded else None
    created = int(state.started_s)
    first, *aliases = state.served_names
    card: dict[str, Any] = {
        "object": "model",
        "created": created,
        "owned_by": "llmhost",
        "max_model_len": info.max_model_len if info is not None else None,
    }
    if info is not None:
        card["input_modalities"] = ["text", "image"] if info.accepts_images else ["text"]
    return ModelList(
        object="list",
        data=[ModelCard(id=first, **card)] + [ModelCard(id=a, **card, root=first) for a in aliases],
    )


@router.post(
    "/v1/completions",
    response_model=CompletionResponse,
    responses=event_stream(
        CompletionChunk | ErrorResponse, f"A completion; with `stream: true`, its chunks, {STREAM_END}."
    ),
)
async def completions(body: CompletionRequest, state: StateDep, request: Request) -> Any:
    state.require_loaded()
    model_name = state.resolve_model(body.model)
    body.check_supported()
    prompts = body.prompts()
    if body.n * len(prompts) > state.settings.max_n * 8:
        raise InvalidRequest("too many prompts x n in one request", param="n")
    if body.n > state.settings.max_n:
        raise InvalidRequest(f"'n' must be at most {state.settings.max_n}", param="n")
    scored = body.requested_prompt_logprobs
    # A prompt is scored once, by its first choice (the others read those scores and may reuse its
    # cached prefix); streamed, every choice scores its own, as its first chunk cannot wait for another's.
    sampling = [
        body.sampling(
            max_tokens=body.max_tokens,
            logprobs=body.logprobs,
            choice=j,
            prompt_logprobs=scored if j == 0 or body.stream else None,
        )
        for j in range(body.n)
    ]
    generation = await state.generation.start(
        GenerationRequest(
            [TokenInput(p, needs_text=body.echo) if isinstance(p, list) else TextInput(p) for p in prompts],
            [sampling] * len(prompts),
            param="prompt",
            request_id=f"cmpl-{uuid.uuid4().hex}",
        )
    )
    echo = _Echo(generation, state.generation.engine.detokenize) if body.echo else None
    created = int(time.time())
    if body.stream:
        return sse_response(
            _stream_chunks(generation, created, model_name, body, echo),
            done="[DONE]",
            shutdown_grace_s=state.settings.shutdown_grace,
        )
    results = await generation.collect(until_disconnected=request.receive)
    choices = []
    for index, r in enumerate(results):
        prompt_index = index // body.n
        scores = results[prompt_index * body.n].prompt_logprobs  # the prompt's first choice scored it
        prefix = echo.text(prompt_index) if echo is not None else ""
        logprobs = None
        if body.logprobs is not None:
            logprobs = (
                echo.logprobs(prompt_index, scores, r.logprobs)
                if echo is not None
                else completion_logprobs(r.logprobs)
            )
        extra: dict[str, Any] = {}
        if body.return_token_ids:
            extra["prompt_token_ids"] = generation.prompts[prompt_index].token_ids
            extra["token_ids"] = r.token_ids
        if scored is not None and scores is not None:
            extra["prompt_logprobs"] = prompt_logprobs_wire(scores)
        choices.append(
            CompletionChoice(
                index=index,
                text=prefix + r.text,
                logprobs=logprobs,
                finish_reason=finish_reason(r.finish_reason),
                stop_reason=r.stop_reason,
                **extra,
            )
        )
    return CompletionResponse(
        id=generation.request_id,
        object="text_completion",
        created=created,
        model=model_name,
        choices=choices,
        usage=CompletionUsage.from_totals(generation.usage(prompt_per_sequence=True)),
    )


class _Echo:
    """The echoed prompts of one request: their text and, with logprobs, their tokens' scores."""

    def __init__(self, generation: Generation, detokenize: Callable[[list[int]], str]) -> None:
        self._texts = [p.text for p in generation.prompts]
        # The first token has no logprob; its text comes from the tokenizer, not from a score.
        self._first_tokens = [detokenize(p.token_ids[:1]) for p in generation.prompts]

    def text(self, prompt_index: int) -> str:
        return self._texts[prompt_index]

    def logprobs(
        self,
        prompt_index: int,
        scores: list[TokenLogprob | None] | None,
        generated: list[TokenLogprob] | None,
    ) -> CompletionLogprobs | None:
        """The prompt's tokens then the generated ones, as OpenAI's legacy `logprobs` with `echo`."""
        return completion_logprobs(generated, prompt=scores, first_token=self._first_tokens[prompt_index])


async def _stream_chunks(
    generation: Generation,
    created: int,
    model_name: str,
    body: CompletionRequest,
    echo: _Echo | None,
) -> AsyncIterator[str]:
    """Each choice's deltas as chunks. An echoed prompt goes first, in a chunk of its own, at once;
    with `logprobs` it needs its scores, so it rides on the choice's first delta instead (as vLLM
    sends it). With `return_token_ids`, each choice's first chunk has `prompt_token_ids` and every
    chunk its `token_ids`."""
    chunk = ChunkEncoder(CompletionChunk, generation.request_id, "text_completion", created, model_name)
    num_choices = len(generation.streams)
    is_pending = [body.return_token_ids] * num_choices  # prompt_token_ids not sent yet
    echo_waits = body.echo and body.logprobs is not None

    def ids(index: int, token_ids: list[int]) -> dict[str, Any]:
        if not body.return_token_ids:
            return {}
        fields: dict[str, Any] = {"token_ids": token_ids}
        if is_pending[index]:
            fields["prompt_token_ids"] = generation.prompts[index // body.n].token_ids
            is_pending[index] = False
        return fields

    if echo is not None and not echo_waits:
        for index in range(num_choices):
            text = echo.text(index // body.n)
            yield chunk(
                [
                    CompletionChunkChoice(
                        index=index, text=text, logprobs=None, finish_reason=None, **ids(index, [])
                    )
                ]
            )
    is_echoed = [not echo_waits] * num_choices
    async for index, delta in generation.deltas():
        text, logprobs = delta.text, completion_logprobs(delta.logprobs)
        if not is_echoed[index]:
            assert echo is not None
            is_echoed[index] = True
            text = echo.text(index // body.n) + text
            logprobs = echo.logprobs(index // body.n, delta.prompt_logprobs, delta.logprobs)
        elif not text and delta.finish_reason is None and delta.logprobs is None:
            if not (body.return_token_ids and delta.token_ids):
                continue
        choice = CompletionChunkChoice(
            index=index,
            text=text,
            logprobs=logprobs,
            finish_reason=finish_reason(delta.finish_reason),
            **ids(index, delta.token_ids),
        )
        yield chunk([choice])
    if body.include_usage:
        yield chunk([], CompletionUsage.from_totals(generation.usage(prompt_per_sequence=True)))
