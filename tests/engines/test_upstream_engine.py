"""The upstream engine in-process, attached to a real `python -m llama_cpp.server` on the embedded model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from llmhost.config import Settings
from llmhost.engines.upstream import attach_engine
from llmhost.errors import ContextLengthExceeded
from llmhost.models.source import resolve_model
from llmhost.types import Delta, FinishReason, SamplingParams
from tests.conftest import RunningServer, stop_server
from tests.llama_server import N_CTX, greedy_reference, render_chat, start_llama_server

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[RunningServer]:
    srv = start_llama_server(tmp_path_factory.mktemp("llama-server"), model_path)
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
async def upstream(llama_server: RunningServer) -> AsyncIterator:
    settings = Settings(engine_url=llama_server.url + "/v1", max_model_len=N_CTX)
    engine = attach_engine(settings, resolve_model(None), "smol")
    await engine.start()
    yield engine
    await engine.close()


async def _collect(stream: AsyncIterator[Delta]) -> tuple[Delta, int]:
    total, n = Delta(), 0
    async for delta in stream:
        total.extend(delta)
        n += 1
    return total, n


async def test_greedy_answer_equals_the_servers_own(upstream, llama_server, model_path):
    prompt = render_chat(model_path, QUESTION)
    reference = greedy_reference(llama_server.url, prompt, 24)
    ref, ref_usage = reference["choices"][0], reference["usage"]
    tokens = upstream.tokenize(prompt)
    out, n_deltas = await _collect(upstream.generate(tokens, SamplingParams(max_tokens=24, temperature=0.0)))
    assert out.text == ref["text"] and out.text
    assert out.finish_reason == FinishReason(ref["finish_reason"])
    assert n_deltas > 1  # streamed, not one block
    assert out.usage is not None and out.usage.prompt_tokens == len(tokens)
    # llama_cpp.server streams no token ids; they are the local tokenization of each piece.
    assert out.usage.completion_tokens == len(out.token_ids) == ref_usage["completion_tokens"]


async def test_info_comes_from_the_local_vocabulary(upstream, model_path):
    info = upstream.info()
    assert info.engine == "upstream" and info.max_model_len == N_CTX
    assert info.chat_template and "im_start" in info.chat_template and info.eos_token == "<|im_end|>"
    assert upstream.detokenize(upstream.tokenize("Hello world")) == "Hello world"


async def test_stop_string_ends_the_sequence(upstream, llama_server, model_path):
    prompt = render_chat(model_path, QUESTION)
    ref = greedy_reference(llama_server.url, prompt, 24)["choices"][0]["text"]
    words = ref.split()
    assert len(words) >= 3, ref
    stop = " " + words[2]
    params = SamplingParams(max_tokens=24, temperature=0.0, stop=(stop,))
    out, _ = await _collect(upstream.generate(upstream.tokenize(prompt), params))
    assert out.finish_reason is FinishReason.STOP and out.text == ref[: ref.index(stop)]


async def test_context_is_checked_before_sending(upstream):
    long_prompt = upstream.tokenize("word " * 1000)
    with pytest.raises(ContextLengthExceeded):
        upstream.generate(long_prompt, SamplingParams(max_tokens=200))
    assert upstream.stats().num_running == 0


async def test_logprobs_come_back(upstream, model_path):
    prompt = render_chat(model_path, QUESTION)
    params = SamplingParams(max_tokens=4, temperature=0.0, logprobs=2)
    out, _ = await _collect(upstream.generate(upstream.tokenize(prompt), params))
    assert out.logprobs and all(lp.logprob <= 0 for lp in out.logprobs)
    assert b"".join(lp.token_bytes for lp in out.logprobs).decode() == out.text
    assert all(len(lp.top) <= 2 for lp in out.logprobs)


async def test_closing_the_stream_releases_it_and_the_server_serves_on(upstream, model_path):
    prompt = upstream.tokenize(render_chat(model_path, [{"role": "user", "content": "Tell a long story."}]))
    stream = upstream.generate(prompt, SamplingParams(max_tokens=500, temperature=0.0))
    await anext(stream)
    assert upstream.stats().num_running == 1
    await stream.aclose()  # closes the HTTP response: the server aborts the sequence
    assert upstream.stats().num_running == 0
    out, _ = await asyncio.wait_for(
        _collect(upstream.generate(prompt, SamplingParams(max_tokens=3, temperature=0.0))), 120
    )
    assert out.finish_reason is FinishReason.LENGTH
