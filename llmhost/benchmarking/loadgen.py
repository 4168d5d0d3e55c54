"""The load generator: stream every request, time every chunk, never hide a failure.

Requests go to `/v1/chat/completions` (default) or `/v1/completions` of any OpenAI-compatible server,
with `stream: true` and `stream_options.include_usage` so the server's own token counts are used; a
server that sends no usage gets its text chunks counted instead. `ignore_eos` (vLLM's and llmhost's
extension; others ignore it) and `max_tokens` fix the output length where the server supports it.

At most `concurrency` requests are in flight. With a finite `request_rate` the requests also arrive as
a Poisson process (exponential gaps, seeded), as `vllm bench serve --request-rate` does; they queue for a
free slot when the concurrency cap is reached.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from llmhost.benchmarking.stats import RequestResult
from llmhost.benchmarking.workload import Prompt
from llmhost.client import server_message
from llmhost.client.sse import aiter_sse_data
from llmhost.client.sse import is_done as sse_done

log = logging.getLogger(__name__)

ENDPOINTS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
# Two probe prompts of these many words give the server's tokens per word (slope) without the
# chat template's fixed cost (intercept).
PROBE_WORDS = (16, 80)


@dataclass
class RequestSpec:
    """What every request of a run shares."""

    endpoint: str  # a key of ENDPOINTS
    model: str
    max_tokens: int
    ignore_eos: bool = True
    temperature: float | None = 0.0  # greedy by default: runs repeat; None leaves the server's default
    extra_body: dict[str, Any] = field(default_factory=dict)

    def body(self, prompt: Prompt) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": prompt.max_tokens or self.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.endpoint == "chat":
            body["messages"] = prompt.chat_messages()
        else:
            body["prompt"] = prompt.completion_prompt()
        if self.ignore_eos:
            body["ignore_eos"] = True
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return {**body, **self.extra_body}


def _chunk_text(chunk: dict[str, Any]) -> str:
    """The generated text a chunk carries (content, reasoning, or a completion's text)."""
    text = ""
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if isinstance(delta, dict):
            text += (delta.get("content") or "") + (delta.get("reasoning_content") or "")
            text += delta.get("reasoning") or ""
        text += choice.get("text") or ""
    return text


def error_reason(exc: BaseException) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


async def send_request(http: httpx.AsyncClient, spec: RequestSpec, prompt: Prompt) -> RequestResult:
    """Send one streamed request and measure it; every failure becomes `result.error`, never raised."""
    result = RequestResult()
    num_text_chunks = 0
    usage: dict[str, Any] | None = None
    is_done = False
    start = last = time.perf_counter()
    try:
        async with http.stream("POST", ENDPOINTS[spec.endpoint], json=spec.body(prompt)) as response:
            if response.status_code >= 400:
                await response.aread()
                try:
                    body = response.json()
                except ValueError:
                    body = None
                message = server_message(body, response.text.strip()[:200] or response.reason_phrase)
                result.error = f"HTTP {response.status_code}: {message}"
                return result
            async for data in aiter_sse_data(response):
                if sse_done(data):
                    is_done = True
                    break
                now = time.perf_counter()
                chunk = json.loads(data)
                if not isinstance(chunk, dict):
                    raise ValueError(f"an event that is not a JSON object: {data[:200]!r}")
                if "error" in chunk and not chunk.get("choices"):
                    result.error = f"stream error: {server_message(chunk, data[:200])}"
                    return result
                if chunk.get("usage"):
                    usage = chunk["usage"]
                if _chunk_text(chunk):
                    num_text_chunks += 1
                    if result.ttft_s is None:
                        result.ttft_s = now - start
                    else:
                        result.itl_s.append(now - last)
                    last = now
    except (httpx.HTTPError, ValueError) as exc:  # transport failures, timeouts, bad JSON
        result.error = error_reason(exc)
        return result
    finally:
        result.e2el_s = time.perf_counter() - start
    if not is_done:
        result.error = "the stream ended before [DONE]"
    elif result.ttft_s is None:
        result.error = "the stream carried no generated text"
    if usage is not None and isinstance(usage.get("prompt_tokens"), int):
        result.input_tokens = usage["prompt_tokens"]
    elif prompt.num_tokens_estimate is not None:
        result.input_tokens, result.is_input_estimated = prompt.num_tokens_estimate, True
    has_count = usage is not None and isinstance(usage.get("completion_tokens"), int)
    result.output_tokens = usage["completion_tokens"] if has_count else num_text_chunks
    return result


async def run_level(
    http: httpx.AsyncClient,
    spec: RequestSpec,
    prompts: list[Prompt],
    *,
    concurrency: int,
    request_rate: float = math.inf,
    seed: int = 0,
    on_result: Callable[[RequestResult], None] | None = None,
) -> tuple[list[RequestResult], float]:
    """Every prompt's result (in prompt order) and the wall time from the first send to the last answer."""
    slots = asyncio.Semaphore(concurrency)
    arrivals = random.Random(seed)

    async def one(prompt: Prompt) -> RequestResult:
        async with slots:
            result = await send_request(http, spec, prompt)
        if on_result is not None:
            on_result(result)
        return result

    start = time.perf_counter()
    tasks: list[asyncio.Task[RequestResult]] = []
    for i, prompt in enumerate(prompts):
        if i and math.isfinite(request_rate):
            await asyncio.sleep(arrivals.expovariate(request_rate))
        tasks.append(asyncio.create_task(one(prompt)))
    results = await asyncio.gather(*tasks)
    return list(results), time.perf_counter() - start


async def first_model(http: httpx.AsyncClient) -> str:
    """The first served model name (`GET /v1/models`); raises `httpx.HTTPError` or `ValueError`."""
    response = await http.get("/v1/models")
    response.raise_for_status()
    data = response.json().get("data") or []
    if not data or not isinstance(data[0], dict) or not data[0].get("id"):
        raise ValueError("GET /v1/models lists no model")
    return str(data[0]["id"])


async def _prompt_tokens(http: httpx.AsyncClient, spec: RequestSpec, text: str) -> int:
    body = spec.body(Prompt(text=text))
    body.update(stream=False, max_tokens=1)
    body.pop("stream_options", None)
    response = await http.post(ENDPOINTS[spec.endpoint], json=body)
    response.raise_for_status()
    return int(response.json()["usage"]["prompt_tokens"])


@dataclass(frozen=True)
class PromptCalibration:
    tokens_per_word: float
    fixed_tokens: float  # what every prompt costs besides its words (the chat template)


async def calibrate(http: httpx.AsyncClient, spec: RequestSpec) -> PromptCalibration | None:
    """The server's tokens per word of the random word list, from its usage on two probe prompts;
    None when the server does not tell (no usage, an error), and the caller assumes one."""
    from llmhost.benchmarking.workload import random_text

    rng = random.Random(1234)
    short, long = (random_text(n, rng) for n in PROBE_WORDS)
    try:
        counts = [await _prompt_tokens(http, spec, text) for text in (short, long)]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        log.warning(
            "cannot calibrate prompt length from the server's usage (%s); counting a word as a token",
            error_reason(exc),
        )
        return None
    slope = (counts[1] - counts[0]) / (PROBE_WORDS[1] - PROBE_WORDS[0])
    if slope <= 0:
        return None
    return PromptCalibration(slope, max(0.0, counts[0] - slope * PROBE_WORDS[0]))


def http_client(
    url: str,
    *,
    concurrency: int,
    api_key: str | None,
    timeout_s: float,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(
        base_url=url.rstrip("/"),
        headers=headers,
        limits=limits,
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
        transport=transport,
    )
