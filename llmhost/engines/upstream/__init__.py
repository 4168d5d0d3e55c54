"""Upstream engines: attach to any OpenAI-compatible server, or launch and supervise vLLM, SGLang,
LMDeploy, llama.cpp's native llama-server or llama-cpp-python's server (one or several replicas) and serve
through it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from llmhost.engines.gpu import VisibleGpu
from llmhost.errors import ModelLoadError
from llmhost.models.source import ModelSource

from .backends import AttachedBackend
from .commands import KINDS, LaunchSpec, split_engine_args
from .engine import UpstreamEngine, default_log_dir
from .supervisor import Supervisor

log = logging.getLogger("llmhost.upstream")

GPU_ENGINE_MAX_NUM_SEQS = 256  # vLLM's own default --max-num-seqs
CPU_KINDS = ("llama-server", "llama-cpp-python")  # sized by llmhost's --max-num-seqs, as in process

__all__ = ["KINDS", "UpstreamEngine", "attach_engine", "supervised_engine", "replica_gpu_sets"]


def attach_engine(settings: Any, source: ModelSource, name: str) -> UpstreamEngine:
    """`--engine-url URL`: a server llmhost did not start; prompts go as text (any server takes it)."""
    headers = {"Authorization": f"Bearer {settings.engine_api_key}"} if settings.engine_api_key else {}
    backend = AttachedBackend(settings.engine_url, headers)
    return UpstreamEngine(
        source,
        [backend],
        engine_name="upstream",
        model_name=name,
        upstream_model=None,  # the first id the server lists
        prompt_as_tokens=False,
        max_model_len=settings.max_model_len,
        max_num_seqs=settings.max_num_seqs,
        device=f"upstream {backend.url}",
        api_key=settings.engine_api_key,
    )


GPU_PLANNED_KINDS = ("vllm", "sglang", "lmdeploy")  # engines that size a KV cache from GPU memory


def supervised_engine(settings: Any, source: ModelSource, name: str, kind_name: str) -> UpstreamEngine:
    """`--engine vllm|sglang|lmdeploy|llama-server|llama-cpp-python`: launch `--replicas` children and
    serve through them."""
    from llmhost.models.convert import engine_model_path

    kind = KINDS[kind_name]
    python = settings.engine_python or sys.executable
    # vLLM 0.32 reads no GGUF: it gets a cached HF conversion (made once, with its own interpreter).
    # The tokenizer and chat template are still read from `source` itself.
    model_path = engine_model_path(source, kind.model_formats, python)
    tp = settings.tensor_parallel_size
    # --max-num-seqs defaults to 8 for the in-process CPU engine; a GPU engine left to its own default
    # (vLLM's 256) runs far more at once, and llmhost admits as many. An explicit value goes to both.
    explicit_seqs = "max_num_seqs" in settings.model_fields_set or kind_name in CPU_KINDS
    seqs_per_server = settings.max_num_seqs if explicit_seqs else GPU_ENGINE_MAX_NUM_SEQS
    gpu_sets = replica_gpu_sets(getattr(settings, "gpu", None), settings.replicas, tp)
    max_model_len = _planned_max_model_len(settings, kind_name, model_path, gpu_sets[0], seqs_per_server)
    if max_model_len is None and kind_name == "llama-server":
        # Its KV pool is max_model_len × slots cells: the training context by default, as in process.
        max_model_len = _training_context(model_path)
    log_dir = Path(settings.engine_log_dir) if settings.engine_log_dir else default_log_dir()
    dtype = getattr(settings, "dtype", None)
    base = LaunchSpec(
        kind=kind_name,
        model_path=str(model_path),
        served_name=name,
        python=python,
        tensor_parallel_size=tp,
        max_model_len=max_model_len,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        quantization=settings.quantization,
        dtype=str(dtype) if dtype else None,
        threads=settings.threads,
        max_num_seqs=settings.max_num_seqs if explicit_seqs else None,
        flash_attn=getattr(settings, "flash_attn", None),
        extra_args=split_engine_args(settings.engine_args),
    )
    if kind.prepare is not None:
        base = kind.prepare(base)  # a missing binary or module fails here, before anything loads
    backends = []
    for i, gpus in enumerate(gpu_sets):
        from dataclasses import replace

        # UUIDs pin a child to exactly these GPUs whatever order CUDA would number them in.
        pinned_ids = tuple(g.device.uuid for g in gpus or ())
        spec = replace(base, gpus=pinned_ids, env={"CUDA_VISIBLE_DEVICES": ""} if gpus is None else {})
        label = kind_name if len(gpu_sets) == 1 else f"{kind_name}-{i}"
        backends.append(
            Supervisor(
                spec, kind, label=label, log_dir=log_dir, startup_timeout_s=settings.engine_startup_timeout
            )
        )
    pinned = [",".join(f"cuda:{g.cuda_index}" for g in gpus) for gpus in gpu_sets if gpus]
    return UpstreamEngine(
        source,
        backends,
        engine_name=kind_name,
        model_name=name,
        upstream_model=name,
        prompt_as_tokens=kind.prompt_as_tokens,
        dialect=kind.dialect,
        max_model_len=max_model_len,
        max_num_seqs=seqs_per_server * len(backends),
        device=" | ".join(pinned) if pinned else "cpu" if gpu_sets[0] is None else "auto",
    )


def _training_context(model_path: Path) -> int | None:
    """The GGUF's training context (its vocabulary only is read); None when the file cannot say, and
    the server then reports the failure itself."""
    from .tokenizer import GgufTokenizer

    try:
        tokenizer = GgufTokenizer(model_path)
    except ModelLoadError:
        return None
    try:
        return tokenizer.info.context_length
    finally:
        tokenizer.close()


def _planned_max_model_len(
    settings: Any, kind_name: str, model_path: Path, gpus: Any, seqs_per_server: int
) -> int | None:
    """`--max-model-len` after `llmhost plan` on one replica's GPUs (llmhost/models/preflight.py): as
    given, or shortened to what fits when it was not given; a model that cannot fit is refused here."""
    if not gpus or kind_name not in GPU_PLANNED_KINDS or not getattr(settings, "plan_gpu_engines", True):
        return settings.max_model_len
    from llmhost.models.preflight import PreflightInput, architecture_of, preflight

    arch = architecture_of(model_path)
    if arch is None:
        return settings.max_model_len
    given = PreflightInput(
        gpu_memory_bytes=tuple(g.device.total_bytes for g in gpus),
        tensor_parallel_size=settings.tensor_parallel_size,
        max_model_len=settings.max_model_len,
        gpu_memory_utilization=settings.gpu_memory_utilization or 0.9,  # vLLM's default
        quantization=settings.quantization,
        max_num_seqs=seqs_per_server,
    )
    return preflight(arch, given) or settings.max_model_len


def replica_gpu_sets(
    gpu: Any, replicas: int, tp: int, *, devices: Any = None, env: Any = None
) -> list[tuple[VisibleGpu, ...] | None]:
    """Disjoint GPU sets, one per replica, chosen through `--gpu` (llmhost/engines/gpu.py).

    "none"/"cpu": None per replica (GPUs hidden from the children). "auto" (the default): the
    replicas × tp visible GPUs with the most free memory (NVML); with no GPU visible the children are not
    pinned at all (CPU engines such as llama-server). "0,2": exactly those CUDA indices, as llmhost sees
    them under its own CUDA_VISIBLE_DEVICES. `devices` and `env` are injectable for tests."""
    from llmhost.engines.gpu import choose_gpus

    spec = (",".join(map(str, gpu)) if isinstance(gpu, list | tuple) else str(gpu or "auto")).strip().lower()
    if spec in ("none", "cpu"):
        return [None] * replicas
    need = replicas * tp
    try:
        choice = choose_gpus(spec, need, devices=devices, env=env)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    if spec == "auto" and not choice.gpus:
        if not choice.candidates:
            return [()] * replicas  # no GPU here: leave the children unpinned
        raise ModelLoadError(f"--replicas {replicas} × --tensor-parallel-size {tp}: {choice.reason}")
    if len(choice.gpus) != need:
        raise ModelLoadError(
            f"--replicas {replicas} × --tensor-parallel-size {tp} needs {need} GPUs; --gpu {spec} gives "
            f"{len(choice.gpus)}"
        )
    log.info("GPUs for the engine servers: %s", choice.reason)
    return [tuple(choice.gpus[i * tp : (i + 1) * tp]) for i in range(replicas)]
