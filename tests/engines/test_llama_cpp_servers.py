"""The two supervised llama.cpp servers without launching them: native `llama-server` (found through
LLMHOST_LLAMA_SERVER, PATH or the checkout's build) and llama-cpp-python's `python -m llama_cpp.server`
(its modules checked in the child's interpreter); their command lines, start-up errors and wire shapes.
Both run for real in tests/e2e/test_upstream_serve.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from llmhost.engines.registry import ENGINES
from llmhost.engines.upstream import programs
from llmhost.engines.upstream.commands import KINDS, LaunchSpec
from llmhost.engines.upstream.wire import DIALECTS, completion_body, parse_logprobs
from llmhost.errors import ModelLoadError
from llmhost.types import SamplingParams


def _pairs(argv: list[str]) -> dict[str, str]:
    return {a: b for a, b in zip(argv, argv[1:], strict=False) if a.startswith("-")}


def _executable(path: Path, body: str = "exit 0") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


NATIVE = LaunchSpec(
    kind="llama-server",
    model_path="/m.gguf",
    served_name="smol",
    max_model_len=1024,
    threads=2,
    max_num_seqs=4,
    flash_attn=True,
    program="/opt/llama.cpp/llama-server",
    extra_args=("--cache-reuse", "256"),
)


# -- command lines ------------------------------------------------------------------------------------
def test_native_llama_server_batches_over_one_shared_kv_pool():
    argv = KINDS["llama-server"].build(NATIVE, 99)
    assert argv[:3] == ["/opt/llama.cpp/llama-server", "-m", "/m.gguf"]
    flags = _pairs(argv)
    assert flags["--host"] == "127.0.0.1" and flags["--port"] == "99" and flags["-a"] == "smol"
    assert flags["-np"] == "4" and flags["-c"] == str(1024 * 4)  # max_model_len × slots
    assert flags["-t"] == flags["-tb"] == "2" and flags["-fa"] == "on"
    assert {"-cb", "-kvu", "--cache-prompt", "--no-jinja"} <= set(argv)
    assert "-ngl" not in argv  # not pinned to GPUs: a CPU build ignores it, a GPU build decides
    assert argv[-2:] == ["--cache-reuse", "256"]  # passed through, last
    kind = KINDS["llama-server"]
    assert kind.prompt_as_tokens and kind.health_path == "/health" and kind.dialect == "llama.cpp"


def test_native_llama_server_offloads_everything_to_pinned_gpus():
    from dataclasses import replace

    argv = KINDS["llama-server"].build(replace(NATIVE, gpus=("GPU-0",), flash_attn=False), 99)
    assert _pairs(argv)["-ngl"] == "all" and _pairs(argv)["-fa"] == "off"


def test_llama_cpp_python_command_and_defaults():
    spec = LaunchSpec(kind="llama-cpp-python", model_path="/m.gguf", served_name="smol", threads=1)
    flags = _pairs(KINDS["llama-cpp-python"].build(spec, 99))
    assert flags["-m"] == "llama_cpp.server" and flags["--model"] == "/m.gguf"
    assert flags["--n_ctx"] == "0" and flags["--n_threads"] == "1" and flags["--n_gpu_layers"] == "0"
    assert flags["--interrupt_requests"] == "false"  # queue, never cut the running stream
    assert flags["--model_alias"] == "smol"
    assert not KINDS["llama-cpp-python"].prompt_as_tokens


def test_both_names_are_engines():
    assert {"llama-server", "llama-cpp-python"} <= set(ENGINES)


# -- finding the native binary ------------------------------------------------------------------------
@pytest.fixture
def no_binary(tmp_path, monkeypatch) -> Path:
    """Nothing on PATH, no variable, no checkout build: each test adds the one it means."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv(programs.LLAMA_SERVER_ENV, raising=False)
    monkeypatch.setattr(programs, "PROJECT_LLAMA_SERVER", tmp_path / "build" / "bin" / "llama-server")
    monkeypatch.setattr(programs, "BUILD_FAILED", tmp_path / "build" / "build.failed")
    return empty


def test_the_variable_then_path_then_the_checkout_build(no_binary, tmp_path, monkeypatch):
    assert programs.find_llama_server() is None
    built = _executable(programs.PROJECT_LLAMA_SERVER)
    assert programs.find_llama_server() == str(built)
    on_path = _executable(no_binary / "llama-server")
    assert programs.find_llama_server() == str(on_path)
    named = _executable(tmp_path / "cuda" / "llama-server")
    monkeypatch.setenv(programs.LLAMA_SERVER_ENV, str(named))
    assert programs.find_llama_server() == str(named)
    assert programs.prepare_llama_server(NATIVE).program == str(named)


def test_a_variable_naming_nothing_is_an_error_not_skipped(no_binary, tmp_path, monkeypatch):
    _executable(no_binary / "llama-server")
    monkeypatch.setenv(programs.LLAMA_SERVER_ENV, str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="LLMHOST_LLAMA_SERVER=.*nope is not an executable"):
        programs.find_llama_server()


def test_a_missing_binary_names_the_build_the_variable_and_the_rename(no_binary):
    programs.BUILD_FAILED.parent.mkdir(parents=True)
    programs.BUILD_FAILED.write_text("cmake configure failed (log: x)\n")
    with pytest.raises(ModelLoadError) as err:
        programs.prepare_llama_server(NATIVE)
    message = err.value.message
    assert "make llama-server" in message and "scripts/build-llama-server.sh" in message
    assert "LLMHOST_LLAMA_SERVER" in message and "--engine llama-cpp-python" in message
    assert "the last build failed: cmake configure failed" in message


# -- llama-cpp-python's modules -----------------------------------------------------------------------
def test_llama_cpp_python_needs_its_server_modules(monkeypatch, tmp_path):
    spec = LaunchSpec(kind="llama-cpp-python", model_path="/m.gguf", served_name="m", python=sys.executable)
    assert programs.prepare_llama_cpp_python(spec) is spec  # the test extra installs them
    monkeypatch.setattr(programs, "PYTHON_SERVER_MODULES", ("llama_cpp", "no_such_module_for_llmhost"))
    with pytest.raises(ModelLoadError) as err:
        programs.prepare_llama_cpp_python(spec)
    assert "needs no_such_module_for_llmhost in" in err.value.message
    assert "pip install 'llmhost[llama-cpp-python]'" in err.value.message
    # Another interpreter (--engine-python) is told to install the server into itself.
    other = _executable(tmp_path / "other-python", f'exec {sys.executable} "$@"')
    with pytest.raises(ModelLoadError, match=f"{other} -m pip install 'llama-cpp-python\\[server\\]'"):
        programs.prepare_llama_cpp_python(
            LaunchSpec(kind="x", model_path="/m", served_name="m", python=str(other))
        )
    with pytest.raises(ModelLoadError, match="cannot run the engine's Python"):
        programs.prepare_llama_cpp_python(
            LaunchSpec(kind="x", model_path="/m", served_name="m", python=str(tmp_path / "none"))
        )


# -- sizing from llmhost's settings -------------------------------------------------------------------
def test_native_context_is_max_model_len_per_slot(model_path, tmp_path, monkeypatch):
    from llmhost.config import Settings
    from llmhost.engines.upstream import supervised_engine
    from llmhost.models.source import ModelSource

    fake = _executable(tmp_path / "llama-server")
    monkeypatch.setenv(programs.LLAMA_SERVER_ENV, str(fake))
    gguf = ModelSource(model_path, "gguf", "smol")
    engine = supervised_engine(Settings.load(gpu="none", max_num_seqs=3), gguf, "smol", "llama-server")
    [backend] = engine.backends
    assert backend.spec.program == str(fake) and engine.max_concurrency == 3
    # No --max-model-len: the GGUF's training context (8192 for SmolLM2), per slot, as in process.
    assert _pairs(KINDS["llama-server"].build(backend.spec, 1))["-c"] == str(8192 * 3)
    told = Settings.load(gpu="none", max_num_seqs=2, max_model_len=1024, replicas=2)
    engine = supervised_engine(told, gguf, "smol", "llama-server")
    assert [_pairs(KINDS["llama-server"].build(b.spec, 1))["-c"] for b in engine.backends] == ["2048"] * 2
    assert engine.max_concurrency == 4 and os.access(engine.backends[1].spec.program, os.X_OK)


# -- wire shapes --------------------------------------------------------------------------------------
def test_native_logprobs_carry_ids_and_bytes():
    raw = {
        "content": [
            {
                "id": 3269,
                "token": " powerful",
                "bytes": [32, 112, 111, 119, 101, 114, 102, 117, 108],
                "logprob": -3.3,
                "top_logprobs": [
                    {"id": 216, "token": " ", "bytes": [32], "logprob": -4.1},
                    {"id": 3269, "token": " powerful", "bytes": [32, 112], "logprob": -3.3},
                ],
            },
            {"id": 319, "token": "\u00e9", "bytes": [195, 169], "logprob": -0.01, "top_logprobs": []},
        ]
    }
    [first, second] = parse_logprobs(raw, 1, lambda t: -99)  # ids come from the wire, not the vocab
    assert first.token_id == 3269 and first.token_bytes == b" powerful" and first.logprob == -3.3
    assert [(t.token_id, t.logprob) for t in first.top] == [(3269, -3.3)]
    assert second.token_bytes == "\u00e9".encode() and second.top == ()
    assert parse_logprobs(raw, 0, lambda t: -99)[0].top == ()


def test_logprobs_zero_still_asks_native_llama_server_for_one():
    # It answers `logprobs: 0` with none at all; the sampled token's own needs 1.
    params = SamplingParams(logprobs=0)
    assert completion_body("m", [1], params, 4, DIALECTS["llama.cpp"])["logprobs"] == 1
    assert completion_body("m", [1], params, 4, DIALECTS["vllm"])["logprobs"] == 0
