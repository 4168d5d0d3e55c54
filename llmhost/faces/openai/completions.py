"""`POST /v1/completions` (raw prompts, no chat template) and `GET /v1/models`."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from llmhost.errors import InvalidRequest
from llmhost.server.deps import StateDep
from llmhost.server.generation import collect, merge_streams
from llmhost.server.sse import sse_response
from llmhost.types import Delta, Usage

from .encode import ChunkEncoder, cached_tokens, finish_reason, usage
from .logprobs import completion_logprobs
from .schemas import CompletionRequest

router = APIRouter(tags=["openai"])


@router.get("/v1/models")
async def list_models(state: StateDep) -> dict[str, Any]:
    max_len = state.engine.info().max_model_len if state.is_loaded else None
    created = int(state.started_s)
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "llmhost",
                "max_model_len": max_len,
            }
            for name in state.served_names[:1]
        ]
        + [
            {
                "id": alias,
                "object": "model",
                "created": created,
                "owned_by": "llmhost",
                "max_model_len": max_len,
                "root": state.served_names[0],
            }
            for alias in state.served_names[1:]
        ],
    }


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, state: StateDep, request: Request) -> Any:
    state.require_loaded()
    model_name = state.resolve_model(body.model)
    body.check_supported()
    prompts = body.prompts()
    if body.n * len(prompts) > state.settings.max_n * 8:
        raise InvalidRequest("too many prompts x n in one request", param="n")
    if body.n > state.settings.max_n:
        raise InvalidRequest(f"'n' must be at most {state.settings.max_n}", param="n")
    engine = state.engine
    prompt_tokens = [p if isinstance(p, list) else engine.tokenize(p, add_special=True) for p in prompts]
    echoes = [engine.detokenize(p) if isinstance(p, list) else p for p in prompts] if body.echo else None
    streams = state.open_streams(
        [
            (tokens, body.sampling(max_tokens=body.max_tokens, logprobs=body.logprobs, choice=j))
            for tokens in prompt_tokens
            for j in range(body.n)
        ]
    )
    num_prompt = sum(len(t) for t in prompt_tokens) * body.n
    request_id = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if body.stream:
        return sse_response(
            _stream_chunks(streams, request_id, created, model_name, num_prompt, body, echoes),
            done="[DONE]",
            shutdown_grace_s=state.settings.shutdown_grace,
        )
    results = await collect(streams, until_disconnected=request.receive)
    choices = []
    for index, r in enumerate(results):
        prefix = echoes[index // body.n] if echoes else ""
        choices.append(
            {
                "index": index,
                "text": prefix + r.text,
                "logprobs": completion_logprobs(r.logprobs, len(prefix)),
                "finish_reason": finish_reason(r.finish_reason),
                "stop_reason": r.stop_reason,
            }
        )
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model_name,
        "choices": choices,
        "usage": usage(
            num_prompt,
            sum(len(r.token_ids) for r in results),
            cached_tokens((r.usage for r in results), per_choice=True),
        ),
    }


async def _stream_chunks(
    streams: list[AsyncIterator[Delta]],
    request_id: str,
    created: int,
    model_name: str,
    num_prompt: int,
    body: CompletionRequest,
    echoes: list[str] | None,
) -> AsyncIterator[str]:
    chunk = ChunkEncoder(request_id, "text_completion", created, model_name)

    if echoes:
        for index in range(len(streams)):
            yield chunk(
                [{"index": index, "text": echoes[index // body.n], "logprobs": None, "finish_reason": None}]
            )
    num_completion = 0
    usages: list[Usage | None] = []
    async for index, delta in merge_streams(streams):
        num_completion += len(delta.token_ids)
        if delta.usage is not None:
            usages.append(delta.usage)
        if not delta.text and delta.finish_reason is None and delta.logprobs is None:
            continue
        yield chunk(
            [
                {
                    "index": index,
                    "text": delta.text,
                    "logprobs": completion_logprobs(delta.logprobs),
                    "finish_reason": finish_reason(delta.finish_reason),
                }
            ]
        )
    if body.include_usage:
        yield chunk([], usage(num_prompt, num_completion, cached_tokens(usages, per_choice=True)))
