"""Chat completions that run the code agent loop (`--code-tools`, or `code_tools: true` in a request).

The loop itself lives in `llmhost/tools/agent_loop.py`; this module is the OpenAI side of it:

- Settings come from the server (`--max-turns`, `--min-turns`, `--action-stop-tokens`, `--tool-server-url`,
  `--max-obs-length`) and may be overridden per request with fields of the same names (the OpenAI SDK's
  `extra_body`). A request may name its own `tool_server_url` only when the operator allowed it.
- Everything that can refuse the request (prompt too long, bad settings, sandbox unavailable, server
  busy) is checked before the first byte of the answer, so it is a plain 4xx/5xx, never a stream error.
- Non-stream: `content` is the whole transcript (model text with the observations inline); each choice
  also lists its `tool_results` (exit code, timed_out, truncated… of every run) and `num_turns`.
  Stream: model text and observations are content deltas in the order they happen.
- `usage.completion_tokens` counts the model's tokens; `usage.tool_tokens` the observations' and
  `usage.num_turns` the tool turns (both extensions). `n` choices run as `n` independent loops at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from llmhost.errors import InvalidRequest, SandboxUnavailable
from llmhost.pipeline import ChatInput, Fit, Generation, GenerationRequest, PreparedPrompt
from llmhost.server.sse import sse_response
from llmhost.server.state import ServerState
from llmhost.tools.agent_loop import LoopConfig, LoopUsage, ObservationDelta, run_code_loop
from llmhost.tools.backends import LocalTools, RemoteTools, ToolBackend
from llmhost.types import Delta, SamplingParams

from .encode import ChunkEncoder, finish_reason
from .logprobs import chat_logprobs
from .responses import (
    ChatCompletionDelta,
    ChatCompletionMessage,
    CodeLoopChoice,
    CodeLoopChunk,
    CodeLoopChunkChoice,
    CodeLoopCompletionResponse,
    CodeLoopUsage,
)
from .schemas import ChatCompletionRequest


def is_requested(body: ChatCompletionRequest, state: ServerState) -> bool:
    """Whether this request runs the loop: its own `code_tools`, else the server's. The server's yields
    to a request that asks for another answer shape (function-calling `tools`, a JSON `response_format`);
    a request that asks for both is a 400."""
    other = None
    if body.tools and body.tool_choice != "none":
        other = "tools"
    elif body.response_format is not None and body.response_format.type != "text":
        other = "response_format"
    if body.code_tools is not None:
        if body.code_tools and other is not None:
            raise InvalidRequest(f"'code_tools' cannot be combined with '{other}'", param=other)
        return body.code_tools
    return state.settings.code_tools and other is None


def loop_config(body: ChatCompletionRequest, state: ServerState) -> LoopConfig:
    s = state.settings
    stops = body.action_stop_tokens if body.action_stop_tokens is not None else s.action_stop_tokens
    if isinstance(stops, str):
        stops = [stops]
    if not stops:
        raise InvalidRequest(
            "'action_stop_tokens' must name at least one stop string", param="action_stop_tokens"
        )
    max_turns = body.max_turns if body.max_turns is not None else s.max_turns
    return LoopConfig(
        max_turns=max_turns,
        # The server's --min-turns yields to a request that allows fewer turns; a request's own is checked.
        min_turns=body.min_turns if body.min_turns is not None else min(s.min_turns, max_turns),
        action_stop_tokens=tuple(stops),
        max_obs_length=body.max_obs_length if body.max_obs_length is not None else s.max_obs_length,
    )


async def _backend(body: ChatCompletionRequest, state: ServerState, request: Request) -> ToolBackend:
    url = state.settings.tool_server_url
    if body.tool_server_url is not None and body.tool_server_url != url:
        if not state.settings.allow_request_tool_server_url:
            raise InvalidRequest(
                "this server does not accept a per-request 'tool_server_url' "
                "(the operator can allow it with --allow-request-tool-server-url)",
                param="tool_server_url",
            )
        if not body.tool_server_url.startswith(("http://", "https://")):
            raise InvalidRequest("'tool_server_url' must be an http(s) URL", param="tool_server_url")
        url = body.tool_server_url
    if url is not None:
        if state.tool_http is None:  # an app built without the composition root's resources
            raise SandboxUnavailable("this app has no HTTP client for remote tool servers")
        return RemoteTools(url, state.tool_http)
    from llmhost.faces.tools import get_service  # the service /get_observation uses: one shared queue

    service = get_service(request)
    if await service.sandbox.probe() == "unavailable":
        raise SandboxUnavailable(service.sandbox.unavailable_reason)
    return LocalTools(service)


async def chat_completion(
    body: ChatCompletionRequest, state: ServerState, request: Request, model_name: str, chat: ChatInput
) -> Any:
    """Answer one chat completion with the code agent loop (stream or not)."""
    config = loop_config(body, state)
    logprobs = body.requested_logprobs
    params = [
        body.sampling(max_tokens=body.requested_max_tokens, logprobs=logprobs, choice=i)
        for i in range(body.n)
    ]
    config.turn_params(params[0], max_tokens=1, has_tools=config.max_turns > 0)  # stop list too long → 400
    backend = await _backend(body, state, request) if config.max_turns > 0 else _NoTools()
    tool_results: dict[str, list[dict]] = {}  # per trajectory: the sandbox's results, in order
    engine = state.generation.engine

    def drive(prompt: PreparedPrompt, sampling: SamplingParams, trajectory_id: str) -> AsyncIterator[Delta]:
        loop = run_code_loop(engine, backend, prompt.token_ids, sampling, config, trajectory_id=trajectory_id)
        return _tap(loop, tool_results.setdefault(trajectory_id, []))

    # The whole loop holds one admission slot per choice across its turns; the prompt must leave room,
    # and the loop budgets `max_tokens` over its turns.
    generation = await state.generation.start(
        GenerationRequest(
            [chat], [params], fit=Fit.PROMPT, request_id=f"chatcmpl-{uuid.uuid4().hex}", driver=drive
        )
    )
    created = int(time.time())
    if body.stream:
        encoder = ChunkEncoder(
            CodeLoopChunk, generation.request_id, "chat.completion.chunk", created, model_name
        )
        return sse_response(
            _stream_chunks(generation, encoder, body.include_usage),
            done="[DONE]",
            shutdown_grace_s=state.settings.shutdown_grace,
        )
    results = await generation.collect(until_disconnected=request.receive)
    loop_usages = [u if isinstance(u, LoopUsage) else None for u in generation.final_usages]
    return CodeLoopCompletionResponse(
        id=generation.request_id,
        object="chat.completion",
        created=created,
        model=model_name,
        choices=[
            CodeLoopChoice(
                index=i,
                message=ChatCompletionMessage(role="assistant", content=r.text),
                logprobs=chat_logprobs(r.logprobs),
                finish_reason=finish_reason(r.finish_reason),
                stop_reason=r.stop_reason,
                num_turns=u.num_turns if u else 0,
                tool_results=tool_results.get(f"{generation.request_id}-{i}", []),
            )
            for i, (r, u) in enumerate(zip(results, loop_usages, strict=True))
        ],
        usage=loop_usage(generation),
    )


def loop_usage(generation: Generation) -> CodeLoopUsage:
    """OpenAI's usage (the model's tokens as completion tokens) plus the loop's extension fields."""
    done = [u for u in generation.final_usages if isinstance(u, LoopUsage)]
    prefilled = [u.num_prefilled_tokens for u in done]
    extra = {}
    if done and None not in prefilled:  # context tokens computed over every turn of every choice
        extra["prefilled_tokens"] = sum(p for p in prefilled if p is not None)
    return CodeLoopUsage.from_totals(
        generation.usage(prompt_per_sequence=False),
        tool_tokens=sum(u.num_tool_tokens for u in done),
        num_turns=sum(u.num_turns for u in done),
        loop_overhead_s=round(sum(u.overhead_s for u in done), 6),
        **extra,
    )


async def _tap(loop: AsyncIterator[Delta], results: list[dict]) -> AsyncIterator[Delta]:
    """Pass a loop's deltas on, keeping its sandbox results for the non-stream answer."""
    try:
        async for delta in loop:
            if isinstance(delta, ObservationDelta) and delta.result is not None:
                results.append(delta.result)
            yield delta
    finally:
        await loop.aclose()  # type: ignore[attr-defined]  # an async generator: frees the engine's sequence


async def _stream_chunks(
    generation: Generation, chunk: ChunkEncoder, include_usage: bool
) -> AsyncIterator[str]:
    for i in range(len(generation.streams)):  # the first delta of each choice carries the role
        role = ChatCompletionDelta(role="assistant", content="")
        yield chunk([CodeLoopChunkChoice(index=i, delta=role, finish_reason=None)])
    async for index, delta in generation.deltas():
        if not delta.text and delta.finish_reason is None and delta.logprobs is None:
            continue
        final: dict[str, Any] = {}
        if delta.finish_reason is not None:
            final["stop_reason"] = delta.stop_reason
            if isinstance(delta.usage, LoopUsage):
                final["num_turns"] = delta.usage.num_turns
        choice = CodeLoopChunkChoice(
            index=index,
            delta=ChatCompletionDelta.of_text("", delta.text),
            logprobs=None if isinstance(delta, ObservationDelta) else chat_logprobs(delta.logprobs),
            finish_reason=finish_reason(delta.finish_reason),
            **final,
        )
        yield chunk([choice])
    if include_usage:
        yield chunk([], loop_usage(generation))


class _NoTools:
    """max_turns=0: the loop never calls a backend (and never needs the sandbox to be available)."""

    async def observe(self, trajectory_id: str, action: str) -> Any:
        raise AssertionError("max_turns=0 never runs a tool")

    async def finish(self, trajectory_id: str) -> None:
        return None
