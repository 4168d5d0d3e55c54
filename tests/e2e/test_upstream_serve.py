"""`llmhost serve` over upstream engines, end to end: attached to a running llama_cpp.server; each
supervised llama.cpp server answering chat completions, streamed and not (native llama-server also two at
once); llama-cpp-python's server killed mid-request and restarted; a fallback chain past a broken model;
and two native llama-server replicas sharing the load.

Native llama-server is the binary `make test` builds (scripts/build-llama-server.sh); where that build
cannot work, its tests skip with the build's reason."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from llmhost.engines.upstream.programs import BUILD_FAILED, find_llama_server
from tests.conftest import RunningServer, start_server, stop_server, wait_ready
from tests.llama_server import N_CTX, greedy_reference, render_chat, start_llama_server

pytestmark = pytest.mark.e2e

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
SMALL = ("--max-model-len", str(N_CTX), "--threads", "1", "--max-num-seqs", "4")


def _client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def _child_pids(server: RunningServer) -> list[int]:
    return [int(p) for p in re.findall(r"started pid (\d+)", server.log())]


def _wait_healthy(server: RunningServer, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if httpx.get(f"{server.url}/health", timeout=5).status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"not healthy again within {timeout_s}s:\n{server.log()}")


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[RunningServer]:
    srv = start_llama_server(tmp_path_factory.mktemp("llama-server"), model_path)
    yield srv
    stop_server(srv)


def test_attach_answers_as_the_upstream_itself(tmp_path, llama_server, model_path):
    srv = start_server(
        tmp_path,
        "--engine-url",
        llama_server.url,
        "--engine-api-key",
        "sk-upstream-secret",
        "--served-model-name",
        "smol",
        *SMALL,
    )
    try:
        client = _client(srv)
        ref = greedy_reference(llama_server.url, render_chat(model_path, QUESTION), 24)["choices"][0]["text"]
        r = client.chat.completions.create(model="smol", messages=QUESTION, max_tokens=24, temperature=0)
        assert r.choices[0].message.content == ref and ref
        chunks = client.chat.completions.create(
            model="smol", messages=QUESTION, max_tokens=24, temperature=0, stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ref
        health = httpx.get(f"{srv.url}/health").json()
        assert health["engine"] == "upstream" and llama_server.url in health["device"]
        # Structured output: llmhost's grammar travels to the upstream, which samples under it.
        r = client.chat.completions.create(
            model="smol",
            messages=[{"role": "user", "content": "Describe a cat as JSON."}],
            max_tokens=40,
            temperature=0,
            response_format={"type": "json_object"},
        )
        assert r.choices[0].message.content.lstrip().startswith("{")
        # An attached server of unknown kind is asked for prompt_logprobs (vLLM's) and, as this one
        # answers without them, the client gets a 400 naming the field rather than an answer without.
        refused = httpx.post(
            f"{srv.url}/v1/completions", json={"prompt": "Hi", "max_tokens": 0, "echo": True, "logprobs": 1}
        )
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "prompt_logprobs"
    finally:
        stop_server(srv)
    assert "sk-upstream-secret" not in srv.log()


def _native_llama_server_or_skip() -> None:
    if find_llama_server() is None:
        why = BUILD_FAILED.read_text().strip() if BUILD_FAILED.is_file() else "it has not been built"
        pytest.skip(f"no native llama-server (make llama-server; LLMHOST_LLAMA_SERVER): {why}")


@pytest.fixture(scope="module")
def native_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    _native_llama_server_or_skip()
    logs = tmp_path_factory.mktemp("native")
    srv = start_server(logs, "--engine", "llama-server", "--engine-log-dir", str(logs), *SMALL)
    yield srv
    stop_server(srv)


def _chat_and_stream(srv: RunningServer) -> openai.types.CompletionUsage:
    """A chat completion with logprobs, then the same streamed; returns the stream's usage."""
    client = _client(srv)
    r = client.chat.completions.create(
        model="x", messages=QUESTION, max_tokens=16, temperature=0, logprobs=True, top_logprobs=2
    )
    content = r.choices[0].message.content
    assert content and r.usage.completion_tokens <= 16
    tokens = r.choices[0].logprobs.content
    assert b"".join(bytes(t.bytes) for t in tokens).decode() == content
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in tokens)
    chunks = list(
        client.chat.completions.create(
            model="x",
            messages=QUESTION,
            max_tokens=16,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    [usage] = [c.usage for c in chunks if c.usage is not None]
    assert usage.prompt_tokens == r.usage.prompt_tokens
    return usage


def test_native_llama_server_answers_chat_and_stream(native_server):
    usage = _chat_and_stream(native_server)
    # Its prompt cache: the streamed request found the first one's prompt already computed.
    assert usage.prompt_tokens_details.cached_tokens > 0
    health = httpx.get(f"{native_server.url}/health").json()
    assert health["engine"] == "llama-server"


def test_native_llama_server_decodes_two_requests_at_once(native_server):
    log_path = Path(re.search(r"\(log (\S+llama-server\.log)\)", native_server.log()).group(1))
    offset = len(log_path.read_bytes())
    aclient = _async_client(native_server)

    async def ask(i: int) -> int:
        msg = [{"role": "user", "content": f"Count from {i} upwards."}]
        r = await aclient.chat.completions.create(
            model="x", messages=msg, max_tokens=32, temperature=0, extra_body={"ignore_eos": True}
        )
        return r.usage.completion_tokens

    assert asyncio.run(_gather(ask, 2)) == [32, 32]
    assert _most_slots_busy(log_path.read_bytes()[offset:].decode(errors="replace")) == 2


def test_native_llama_server_takes_logit_bias_and_refuses_min_tokens(native_server):
    client = _client(native_server)
    tokens = httpx.post(
        f"{native_server.url}/tokenize", json={"prompt": " banana", "add_special_tokens": False}
    )
    forced = tokens.json()["tokens"][0]
    r = client.completions.create(
        model="x",
        prompt="The capital of France is",
        max_tokens=3,
        temperature=0,
        logit_bias={str(forced): 100},
    )
    assert r.choices[0].text == " banana" * 3  # the bias travelled to llama-server, which sampled under it
    with pytest.raises(openai.BadRequestError) as err:  # llama-server has no minimum length
        client.completions.create(model="x", prompt="Hi", max_tokens=3, extra_body={"min_tokens": 2})
    assert err.value.body["param"] == "min_tokens"


def _most_slots_busy(log_text: str) -> int:
    """The most sequences llama-server had in its slots at once, from its slot log lines."""
    busy = most = 0
    for line in log_text.splitlines():
        if "| processing task" in line:
            busy += 1
            most = max(most, busy)
        elif "| stop processing" in line:
            busy -= 1
    return most


def test_llama_cpp_python_answers_chat_and_stream(tmp_path):
    srv = start_server(tmp_path, "--engine", "llama-cpp-python", "--engine-log-dir", str(tmp_path), *SMALL)
    try:
        _chat_and_stream(srv)
        assert httpx.get(f"{srv.url}/health").json()["engine"] == "llama-cpp-python"
    finally:
        stop_server(srv)


def _async_client(server: RunningServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)


def test_supervised_engine_is_restarted_after_kill_9(tmp_path):
    srv = start_server(tmp_path, "--engine", "llama-cpp-python", "--engine-log-dir", str(tmp_path), *SMALL)
    try:
        client = _client(srv)
        [child] = _child_pids(srv)
        outcome: list[BaseException | str] = []

        def long_request() -> None:
            try:
                r = client.completions.create(
                    model="x",
                    prompt="Once upon a time",
                    max_tokens=600,
                    temperature=0,
                    extra_body={"ignore_eos": True},
                )
                outcome.append(r.choices[0].finish_reason)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=long_request)
        thread.start()
        _wait_running(srv)
        os.kill(child, signal.SIGKILL)
        thread.join(60)
        [err] = outcome
        assert isinstance(err, openai.APIStatusError) and err.status_code == 503, err
        assert "llama-cpp-python" in err.message
        # /health says what happens until the new child answers (it may already be back).
        body = httpx.get(f"{srv.url}/health").json()
        assert (
            body["model_loaded"] is False and "exited with code -9" in body["error"] or body["model_loaded"]
        )
        _wait_healthy(srv)
        r = client.chat.completions.create(model="x", messages=QUESTION, max_tokens=8, temperature=0)
        assert r.choices[0].message.content
        pids = _child_pids(srv)
        assert len(pids) == 2 and pids[1] != child
        metrics = httpx.get(f"{srv.url}/metrics").text
        assert re.search(r'llmhost:engine_restarts_total\{engine="llama-cpp-python",[^}]*\} 1\.0', metrics)
        # Unloading stops the child; loading starts a new one.
        assert httpx.post(f"{srv.url}/api/v1/model/unload", timeout=60).json()["status"] == "unloaded"
        with pytest.raises(ProcessLookupError):
            os.kill(pids[1], 0)
        assert httpx.post(f"{srv.url}/api/v1/model/load", timeout=120).json()["status"] == "loaded"
        assert client.completions.create(model="x", prompt="Hi", max_tokens=2).choices[0].text is not None
        assert len(_child_pids(srv)) == 3
    finally:
        stop_server(srv)
    with pytest.raises(ProcessLookupError):  # the supervised child went with llmhost
        os.kill(_child_pids(srv)[-1], 0)


def _wait_running(srv: RunningServer, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if re.search(r"vllm:num_requests_running\{[^}]*\} 1\.0", httpx.get(f"{srv.url}/metrics").text):
            time.sleep(0.5)  # let it get going upstream
            return
        time.sleep(0.05)
    raise AssertionError("the request never started")


def test_fallback_chain_serves_the_second_model_and_says_why(tmp_path, model_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)  # a GGUF header and nothing else
    srv = start_server(
        tmp_path,
        "--model",
        str(broken),
        "--fallback-model",
        str(model_path),
        "--engine",
        "llama-cpp-python",
        "--engine-log-dir",
        str(tmp_path),
        *SMALL,
    )
    try:
        info = httpx.get(f"{srv.url}/api/v1/model/info").json()
        assert info["chosen_engine"] == "llama-cpp-python" and info["chosen_model"] == str(model_path)
        [failure] = info["fallback_failures"]
        assert failure["model"] == str(broken) and failure["engine"] == "llama-cpp-python"
        assert "ModelLoadError" in failure["error"]
        assert info["model_name"] == "broken"  # clients keep the name they know
        r = _client(srv).chat.completions.create(model="x", messages=QUESTION, max_tokens=4)
        assert r.choices[0].message.content
        assert "fallback chain: llama-cpp-python with" in srv.log() and str(broken) in srv.log()
    finally:
        stop_server(srv)


def test_two_replicas_share_concurrent_requests(tmp_path):
    _native_llama_server_or_skip()
    srv = start_server(
        tmp_path, "--engine", "llama-server", "--replicas", "2", "--engine-log-dir", str(tmp_path), *SMALL
    )
    try:
        logs = [tmp_path / "llama-server-0.log", tmp_path / "llama-server-1.log"]
        wait_ready(srv)  # the readiness probe's one-token request is not one of the 8
        before = [_completions_served(p) for p in logs]
        aclient = _async_client(srv)

        async def ask(i: int) -> str:
            msg = [{"role": "user", "content": f"Say a word about the number {i}."}]
            r = await aclient.chat.completions.create(model="x", messages=msg, max_tokens=8, temperature=0)
            return r.choices[0].message.content

        answers = asyncio.run(_gather(ask, 8))
        assert len(answers) == 8 and all(answers)
        served = [_completions_served(p) - b for p, b in zip(logs, before, strict=True)]
        assert sum(served) == 8 and min(served) >= 1, served
    finally:
        stop_server(srv)


async def _gather(fn, n: int) -> list:
    return await asyncio.gather(*(fn(i) for i in range(n)))


def _completions_served(log: Path) -> int:
    return log.read_text(errors="replace").count("| stop processing")  # llama-server: a slot freed
