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

import httpx
from fastapi import Request

from llmhost.errors import ContextLengthExceeded, InvalidRequest, QueueFull, SandboxUnavailable
from llmhost.server.admission import TrackedStream
from llmhost.server.generation import collect, merge_streams
from llmhost.server.metrics import RequestMetrics
from llmhost.server.sse import sse_response
from llmhost.server.state import ChatPrompt, ServerState
from llmhost.tools.agent_loop import LoopConfig, LoopUsage, ObservationDelta, run_code_loop
from llmhost.tools.backends import LocalTools, RemoteTools, ToolBackend
from llmhost.types import Delta

from .encode import ChunkEncoder, cached_tokens, finish_reason, usage
from .logprobs import chat_logprobs
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
        app_state = request.app.state
        if getattr(app_state, "code_loop_http", None) is None:  # one pooled client per app
            app_state.code_loop_http = httpx.AsyncClient()
        return RemoteTools(url, app_state.code_loop_http)
    from llmhost.faces.tools import get_service  # the service /get_observation uses: one shared queue

    service = get_service(request)
    if await service.sandbox.probe() == "unavailable":
        raise SandboxUnavailable(service.sandbox.unavailable_reason)
    return LocalTools(service)


async def chat_completion(
    body: ChatCompletionRequest, state: ServerState, request: Request, model_name: str, prompt: ChatPrompt
) -> Any:
    """Answer one chat completion with the code agent loop (stream or not)."""
    config = loop_config(body, state)
    prompt_tokens = prompt.token_ids
    max_model_len = state.engine.info().max_model_len
    if len(prompt_tokens) >= max_model_len:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {max_model_len} tokens. However, the prompt has "
            f"{len(prompt_tokens)} tokens, which leaves no room for a completion."
        )
    logprobs = body.requested_logprobs
    params = [
        body.sampling(max_tokens=body.requested_max_tokens, logprobs=logprobs, choice=i)
        for i in range(body.n)
    ]
    config.turn_params(params[0], max_tokens=1, has_tools=config.max_turns > 0)  # stop list too long → 400
    backend = await _backend(body, state, request) if config.max_turns > 0 else _NoTools()
    try:
        state.admission.reserve(body.n)  # the whole loop holds one slot per choice, across its turns
    except QueueFull:
        state.metrics.rejected("queue_full")
        raise
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    timeout_s = state.settings.request_timeout
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    streams = [
        TrackedStream(
            run_code_loop(
                state.engine,
                backend,
                prompt_tokens,
                p,
                config,
                trajectory_id=f"{request_id}-{i}",
            ),
            state.admission,
            RequestMetrics(state.metrics, len(prompt_tokens)),
            deadline,
            timeout_s,
        )
        for i, p in enumerate(params)
    ]
    created = int(time.time())
    if body.stream:
        encoder = ChunkEncoder(request_id, "chat.completion.chunk", created, model_name)
        return sse_response(
            _stream_chunks(streams, encoder, body.include_usage),
            done="[DONE]",
            shutdown_grace_s=state.settings.shutdown_grace,
        )
    tool_results: list[list[dict]] = [[] for _ in streams]
    taps = [_tap(s, tool_results[i]) for i, s in enumerate(streams)]
    results = await collect(taps, until_disconnected=request.receive)
    loop_usages = [r.usage if isinstance(r.usage, LoopUsage) else None for r in results]
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model_name,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": r.text},
                "logprobs": chat_logprobs(r.logprobs),
                "finish_reason": finish_reason(r.finish_reason),
                "stop_reason": r.stop_reason,
                "num_turns": u.num_turns if u else 0,
                "tool_results": tool_results[i],
            }
            for i, (r, u) in enumerate(zip(results, loop_usages, strict=True))
        ],
        "usage": loop_usage(len(prompt_tokens), loop_usages),
    }


def loop_usage(num_prompt: int, usages: list[LoopUsage | None]) -> dict[str, Any]:
    """OpenAI's usage (the model's tokens as completion tokens) plus the loop's extension fields."""
    done = [u for u in usages if u is not None]
    num_completion = sum(u.completion_tokens for u in done)
    out = usage(num_prompt, num_completion, cached_tokens(done, per_choice=False))
    out["tool_tokens"] = sum(u.num_tool_tokens for u in done)
    out["num_turns"] = sum(u.num_turns for u in done)
    out["loop_overhead_s"] = round(sum(u.overhead_s for u in done), 6)
    prefilled = [u.num_prefilled_tokens for u in done]
    if done and None not in prefilled:  # context tokens computed over every turn of every choice
        out["prefilled_tokens"] = sum(p for p in prefilled if p is not None)
    return out


async def _tap(stream: TrackedStream, results: list[dict]) -> AsyncIterator[Delta]:
    """Pass a loop's deltas on, keeping its sandbox results for the non-stream answer."""
    try:
        async for delta in stream:
            if isinstance(delta, ObservationDelta) and delta.result is not None:
                results.append(delta.result)
            yield delta
    finally:
        await stream.aclose()


async def _stream_chunks(
    streams: list[TrackedStream], chunk: ChunkEncoder, include_usage: bool
) -> AsyncIterator[str]:
    for i in range(len(streams)):  # the first delta of each choice carries the role
        yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    usages: list[LoopUsage | None] = [None] * len(streams)
    async for index, delta in merge_streams(streams):
        if not delta.text and delta.finish_reason is None and delta.logprobs is None:
            continue
        choice: dict[str, Any] = {
            "index": index,
            "delta": {"content": delta.text} if delta.text else {},
            "logprobs": None if isinstance(delta, ObservationDelta) else chat_logprobs(delta.logprobs),
            "finish_reason": finish_reason(delta.finish_reason),
        }
        if delta.finish_reason is not None:
            choice["stop_reason"] = delta.stop_reason
            if isinstance(delta.usage, LoopUsage):
                usages[index] = delta.usage
                choice["num_turns"] = delta.usage.num_turns
        yield chunk([choice])
    if include_usage:
        yield chunk([], loop_usage(_num_prompt(usages), usages))


def _num_prompt(usages: list[LoopUsage | None]) -> int:
    return next((u.prompt_tokens for u in usages if u is not None), 0)


class _NoTools:
    """max_turns=0: the loop never calls a backend (and never needs the sandbox to be available)."""

    async def observe(self, trajectory_id: str, action: str) -> Any:
        raise AssertionError("max_turns=0 never runs a tool")

    async def finish(self, trajectory_id: str) -> None:
        return None
