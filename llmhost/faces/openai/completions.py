"""`POST /v1/completions` (raw prompts, no chat template) and `GET /v1/models`."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from llmhost.errors import InvalidRequest
from llmhost.faces.wire import FaceRouter, event_stream
from llmhost.pipeline import Generation, GenerationRequest, TextInput, TokenInput
from llmhost.server.deps import StateDep
from llmhost.server.item_limit import ItemLimitRoute
from llmhost.server.sse import sse_response

from .encode import ChunkEncoder, finish_reason
from .logprobs import completion_logprobs
from .responses import (
    ERRORS,
    STREAM_END,
    CompletionChoice,
    CompletionChunk,
    CompletionChunkChoice,
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
    sampling = [
        body.sampling(max_tokens=body.max_tokens, logprobs=body.logprobs, choice=j) for j in range(body.n)
    ]
    generation = await state.generation.start(
        GenerationRequest(
            [TokenInput(p, needs_text=body.echo) if isinstance(p, list) else TextInput(p) for p in prompts],
            [sampling] * len(prompts),
            param="prompt",
            request_id=f"cmpl-{uuid.uuid4().hex}",
        )
    )
    echoes = [p.text for p in generation.prompts] if body.echo else None
    created = int(time.time())
    if body.stream:
        return sse_response(
            _stream_chunks(generation, created, model_name, body, echoes),
            done="[DONE]",
            shutdown_grace_s=state.settings.shutdown_grace,
        )
    results = await generation.collect(until_disconnected=request.receive)
    choices = []
    for index, r in enumerate(results):
        prefix = echoes[index // body.n] if echoes else ""
        choices.append(
            CompletionChoice(
                index=index,
                text=prefix + r.text,
                logprobs=completion_logprobs(r.logprobs, len(prefix)),
                finish_reason=finish_reason(r.finish_reason),
                stop_reason=r.stop_reason,
                **(
                    {
                        "prompt_token_ids": generation.prompts[index // body.n].token_ids,
                        "token_ids": r.token_ids,
                    }
                    if body.return_token_ids
                    else {}
                ),
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


async def _stream_chunks(
    generation: Generation,
    created: int,
    model_name: str,
    body: CompletionRequest,
    echoes: list[str] | None,
) -> AsyncIterator[str]:
    chunk = ChunkEncoder(CompletionChunk, generation.request_id, "text_completion", created, model_name)

    if echoes:
        for index in range(len(generation.streams)):
            echo = echoes[index // body.n]
            yield chunk([CompletionChunkChoice(index=index, text=echo, logprobs=None, finish_reason=None)])
    async for index, delta in generation.deltas():
        if not delta.text and delta.finish_reason is None and delta.logprobs is None:
            continue
        choice = CompletionChunkChoice(
            index=index,
            text=delta.text,
            logprobs=completion_logprobs(delta.logprobs),
            finish_reason=finish_reason(delta.finish_reason),
        )
        yield chunk([choice])
    if body.include_usage:
        yield chunk([], CompletionUsage.from_totals(generation.usage(prompt_per_sequence=True)))
