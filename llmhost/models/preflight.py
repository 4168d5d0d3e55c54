"""`serve` runs `llmhost plan` before it launches a GPU engine: refuse early, or shorten the context.

vLLM finds out at start-up, after minutes of loading weights, that the KV cache does not fit (seed 004
is a week of that). The same arithmetic as `llmhost plan`, on the GPUs actually chosen, says so before
anything starts:

- fits: logged, nothing changes;
- fits only with a shorter context: when the operator did not ask for a length, `--max-model-len`
  becomes the longest that fits (logged loudly, with the plan's words); when they did, refused;
- does not fit: refused, with the plan's words and its re-planned alternatives (TP, quantization,
  fp8 KV cache, a smaller model of the same family).

A model the planner cannot read (no config.json, an architecture it does not know) is not refused:
the engine's own check still runs, and the log says the plan was skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from llmhost.errors import ModelLoadError
from llmhost.models.planner import (
    DOES_NOT_FIT,
    FITS,
    QUANT_BITS,
    Architecture,
    Plan,
    PlanError,
    PlanRequest,
    plan_with_alternatives,
)

log = logging.getLogger("llmhost.plan")


@dataclass(frozen=True)
class PreflightInput:
    """What `serve` knows when it is about to launch: the GPUs of one replica and the settings."""

    gpu_memory_bytes: tuple[int, ...]  # total memory of each GPU of one replica
    tensor_parallel_size: int
    max_model_len: int | None  # None: not given, the model's own context
    gpu_memory_utilization: float
    quantization: str | None
    max_num_seqs: int | None


def architecture_of(model_path: str | Path) -> Architecture | None:
    """The planner's view of a model folder; None (and a log line) when it cannot be read."""
    from llmhost.models.inspect import ModelInspectError, inspect_model

    try:
        return inspect_model(model_path)
    except (ModelInspectError, PlanError, KeyError, ValueError) as exc:
        log.warning("plan skipped: cannot read %s for planning (%s)", model_path, exc)
        return None


def preflight(arch: Architecture, given: PreflightInput) -> int | None:
    """Plan `arch` on the chosen GPUs. Returns the `--max-model-len` to launch with when it must be
    shortened (None: launch as asked); raises `ModelLoadError` in the plan's words when it cannot fit."""
    from llmhost.models import catalogue

    request = PlanRequest(
        num_gpus=len(given.gpu_memory_bytes),
        gpu_memory_bytes=min(given.gpu_memory_bytes),  # tensor parallel: the smallest GPU decides
        tensor_parallel_size=given.tensor_parallel_size,
        max_model_len=given.max_model_len,
        gpu_memory_utilization=given.gpu_memory_utilization,
        # Only names the planner knows; vLLM's own (e.g. "gptq", "marlin") leave it to the checkpoint.
        quantization=given.quantization if given.quantization in QUANT_BITS else None,
        **({"max_num_seqs": given.max_num_seqs} if given.max_num_seqs else {}),
    )
    try:
        result = plan_with_alternatives(arch, request, catalogue.smaller_in_family(arch))
    except PlanError as exc:
        log.warning("plan skipped: %s", exc)
        return None
    if result.verdict == FITS:
        log.info(
            "plan: %s fits, %d × %d-token sequences at once (KV cache %.2f GiB per GPU)",
            arch.name,
            result.num_full_sequences,
            result.max_model_len,
            result.kv_cache_bytes / 1024**3,
        )
        return None
    words = _words(result)
    if result.verdict == DOES_NOT_FIT or given.max_model_len is not None:
        raise ModelLoadError(f"plan: {arch.name} {result.verdict} on these GPUs: {words}")
    log.warning(
        "!!! plan: %s %s; serving with --max-model-len %d instead of %d: %s",
        arch.name,
        result.verdict,
        result.max_fitting_len,
        result.max_model_len,
        words,
    )
    return result.max_fitting_len


def _words(result: Plan) -> str:
    parts = [result.suggestion] if result.suggestion else []
    if result.alternatives:
        parts.append("alternatives: " + "; ".join(result.alternatives))
    return ". ".join(parts)
