"""Will a model fit on these GPUs? The arithmetic vLLM does at startup, done before anything is downloaded.

Pure computation: `Architecture` + `PlanRequest` in, `Plan` out. The memory model follows vLLM's own
accounting (anchors §2): budget = GPU memory × utilization; the KV cache gets what is left after the
weights and the runtime overhead; per-token KV bytes = 2 × layers × kv_heads × head_dim × dtype bytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

GIB = 1024**3
BLOCK_SIZE = 16  # vLLM hands out KV cache in 16-token blocks

# Bits per *linear-layer* weight, group scales and zero points included (group size 128:
# 16-bit scale + packed zero point per group ≈ +0.16 bit). Embeddings and lm_head stay 16-bit
# in AWQ/GPTQ/FP8/INT8 checkpoints; GGUF quantizes (nearly) everything, so it applies to all.
QUANT_BITS: dict[str, float] = {
    "fp32": 32.0,
    "fp16": 16.0,
    "bf16": 16.0,
    "fp8": 8.0,
    "int8": 8.0,
    "gptq-int8": 8.16,
    "awq": 4.16,
    "gptq-int4": 4.16,
    "gguf-q8_0": 8.5,
    "gguf-q6_k": 6.56,
    "gguf-q5_k_m": 5.69,
    "gguf-q4_k_m": 4.85,
    "gguf-q4_0": 4.5,
}
SIXTEEN_BIT = ("fp16", "bf16", "fp32")
KV_DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1}

# Runtime overhead model, stated in every plan: a fixed part for the CUDA context, cuBLAS/NCCL
# workspaces and CUDA graphs, plus the activation peak vLLM measures in its profiling run at
# max_num_batched_tokens, plus fp32 logits for max_num_seqs sequences.
FIXED_OVERHEAD_GIB = 1.5
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192
DEFAULT_MAX_NUM_SEQS = 256


class PlanError(ValueError):
    """The request itself is impossible (bad TP, unknown quantization), as opposed to "does not fit"."""


@dataclass(frozen=True)
class Architecture:
    """The few config.json numbers that decide memory use."""

    name: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    intermediate_size: int
    tie_word_embeddings: bool
    max_context: int
    num_params: int | None = None  # published count; None → computed from the shapes
    quantization: str = "bf16"  # what the checkpoint stores
    weight_bytes: int | None = None  # measured from real files, when there are some

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    def computed_params(self) -> int:
        """Decoder-only transformer with GQA and a gated MLP (q/k/v biases ignored: <0.1%)."""
        h, hd = self.hidden_size, self.head_dim
        attn = h * hd * (2 * self.num_attention_heads + 2 * self.num_kv_heads)
        mlp = 3 * h * self.intermediate_size
        return self.embedding_params + self.num_layers * (attn + mlp + 2 * h) + h

    @property
    def params(self) -> int:
        return self.num_params or self.computed_params()

    def estimated_weight_bytes(self, quantization: str) -> int:
        bits = quant_bits(quantization)
        if quantization.startswith("gguf") or quantization in SIXTEEN_BIT:
            return int(self.params * bits / 8)
        embedding = self.embedding_params
        return int((self.params - embedding) * bits / 8 + embedding * 2)


def quant_bits(quantization: str) -> float:
    try:
        return QUANT_BITS[quantization]
    except KeyError:
        raise PlanError(f"unknown quantization {quantization!r}; known: {', '.join(QUANT_BITS)}") from None


@dataclass(frozen=True)
class PlanRequest:
    num_gpus: int
    gpu_memory_bytes: int
    tensor_parallel_size: int | None = None  # None → every GPU
    max_model_len: int | None = None  # None → the model's max context
    gpu_memory_utilization: float = 0.9
    quantization: str | None = None  # None → what the checkpoint stores
    kv_cache_dtype: str = "auto"
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS
    overhead_gib: float | None = None  # None → the stated model above

    def __post_init__(self) -> None:
        if self.num_gpus < 1 or self.gpu_memory_bytes <= 0:
            raise PlanError("need at least one GPU with some memory")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise PlanError("--gpu-memory-utilization must be in (0, 1]")
        if self.kv_cache_dtype != "auto" and self.kv_cache_dtype not in KV_DTYPE_BYTES:
            raise PlanError(f"--kv-cache-dtype must be auto or one of {', '.join(KV_DTYPE_BYTES)}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise PlanError("--max-model-len must be positive")
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1:
            raise PlanError("--max-num-seqs and --max-num-batched-tokens must be positive")


FITS = "fits"
FITS_SHORTER = "fits only with a shorter context"
DOES_NOT_FIT = "does not fit"


@dataclass
class Plan:
    """Everything per GPU, in bytes, plus the verdict and what to try instead."""

    model: str
    quantization: str
    tensor_parallel_size: int
    num_gpus: int
    gpu_memory_bytes: int
    gpu_memory_utilization: float
    budget_bytes: int
    weight_bytes: int
    weights_measured: bool
    kv_dtype: str
    kv_bytes_per_token: int
    overhead_bytes: int
    overhead_basis: str
    kv_cache_bytes: int
    kv_tokens: int
    max_model_len: int
    max_fitting_len: int
    num_full_sequences: int
    verdict: str
    suggestion: str = ""
    alternatives: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.verdict == FITS


def kv_bytes_per_token(arch: Architecture, kv_dtype_bytes: int, tensor_parallel_size: int = 1) -> int:
    """2 (K and V) × layers × kv_heads × head_dim × dtype bytes, split across TP ranks."""
    return 2 * arch.num_layers * arch.num_kv_heads * arch.head_dim * kv_dtype_bytes // tensor_parallel_size


def _kv_dtype(request: PlanRequest, quantization: str) -> str:
    if request.kv_cache_dtype != "auto":
        return request.kv_cache_dtype
    return "fp32" if quantization == "fp32" else "bf16"  # vLLM's auto = the activation dtype (16-bit)


def _check_tp(arch: Architecture, tp: int, num_gpus: int) -> None:
    if tp < 1 or tp > num_gpus:
        raise PlanError(f"--tensor-parallel-size {tp} needs 1..{num_gpus} GPUs (you have {num_gpus})")
    if arch.num_attention_heads % tp or arch.num_kv_heads % tp:
        raise PlanError(
            f"--tensor-parallel-size {tp} must divide the attention heads ({arch.num_attention_heads}) "
            f"and the kv heads ({arch.num_kv_heads}) of {arch.name}; "
            f"valid: {', '.join(map(str, valid_tp_sizes(arch, num_gpus)))}"
        )


def valid_tp_sizes(arch: Architecture, num_gpus: int) -> list[int]:
    return [
        t for t in range(1, num_gpus + 1) if arch.num_attention_heads % t == 0 and arch.num_kv_heads % t == 0
    ]


def plan(arch: Architecture, request: PlanRequest) -> Plan:
    """The plan for one configuration, without alternatives (see `plan_with_alternatives`)."""
    tp = request.tensor_parallel_size or max(valid_tp_sizes(arch, request.num_gpus))
    _check_tp(arch, tp, request.num_gpus)
    quantization = request.quantization or arch.quantization
    quant_bits(quantization)
    measured = arch.weight_bytes is not None and request.quantization in (None, arch.quantization)
    total_weights = arch.weight_bytes if measured else arch.estimated_weight_bytes(quantization)
    weight_bytes = math.ceil(total_weights / tp)

    kv_dtype = _kv_dtype(request, quantization)
    per_token = kv_bytes_per_token(arch, KV_DTYPE_BYTES[kv_dtype], tp)
    max_model_len = request.max_model_len or arch.max_context

    if request.overhead_gib is not None:
        overhead = int(request.overhead_gib * GIB)
        basis = f"{request.overhead_gib:g} GiB (--overhead-gib)"
    else:
        per_token_activations = 2 * (4 * arch.hidden_size + 3 * arch.intermediate_size // tp)  # 16-bit
        activations = request.max_num_batched_tokens * per_token_activations
        logits = min(request.max_num_seqs, request.max_num_batched_tokens) * arch.vocab_size * 4
        overhead = int(FIXED_OVERHEAD_GIB * GIB) + activations + logits
        basis = (
            f"{FIXED_OVERHEAD_GIB:g} GiB CUDA context/graphs + activations for "
            f"{request.max_num_batched_tokens} batched tokens + logits for {request.max_num_seqs} seqs"
        )

    budget = int(request.gpu_memory_bytes * request.gpu_memory_utilization)
    kv_cache = budget - weight_bytes - overhead
    kv_tokens = max(0, kv_cache) // (per_token * BLOCK_SIZE) * BLOCK_SIZE if per_token else 0
    max_fitting_len = min(kv_tokens, arch.max_context)
    num_full = kv_tokens // max_model_len

    if kv_tokens < BLOCK_SIZE:
        verdict = DOES_NOT_FIT
        short = -kv_cache if kv_cache < 0 else 0
        suggestion = (
            f"weights {weight_bytes / GIB:.2f} GiB + overhead {overhead / GIB:.2f} GiB per GPU exceed the "
            f"budget {budget / GIB:.2f} GiB by {short / GIB:.2f} GiB: no memory for the KV cache"
        )
    elif kv_tokens < max_model_len:
        verdict = FITS_SHORTER
        suggestion = (
            f"a {max_model_len}-token sequence needs {max_model_len * per_token / GIB:.2f} GiB of KV cache, "
            f"only {kv_cache / GIB:.2f} GiB is left; the estimated maximum model length is "
            f"{max_fitting_len}: use --max-model-len {max_fitting_len}"
        )
    else:
        verdict, suggestion = FITS, ""

    return Plan(
        model=arch.name,
        quantization=quantization,
        tensor_parallel_size=tp,
        num_gpus=request.num_gpus,
        gpu_memory_bytes=request.gpu_memory_bytes,
        gpu_memory_utilization=request.gpu_memory_utilization,
        budget_bytes=budget,
        weight_bytes=weight_bytes,
        weights_measured=measured,
        kv_dtype=kv_dtype,
        kv_bytes_per_token=per_token,
        overhead_bytes=overhead,
        overhead_basis=basis,
        kv_cache_bytes=kv_cache,
        kv_tokens=kv_tokens,
        max_model_len=max_model_len,
        max_fitting_len=max_fitting_len,
        num_full_sequences=num_full,
        verdict=verdict,
        suggestion=suggestion,
    )


def _describe(p: Plan, change: str) -> str:
    if p.verdict == FITS:
        return f"{change}: fits, {p.num_full_sequences} × {p.max_model_len}-token sequences at once"
    return f"{change}: fits with --max-model-len {p.max_fitting_len}"


def plan_with_alternatives(
    arch: Architecture, request: PlanRequest, smaller_models: Iterable[Architecture] = ()
) -> Plan:
    """`plan`, plus concrete alternatives (re-planned) when it does not fit as asked.

    Tried in order: a larger TP, lighter quantizations, fp8 KV cache, then `smaller_models`
    (largest first; the caller passes same-family models from the catalogue).
    """
    result = plan(arch, request)
    if result.fits:
        return result
    tried: list[str] = []
    for tp in valid_tp_sizes(arch, request.num_gpus):
        if tp > result.tensor_parallel_size:
            p = plan(arch, replace(request, tensor_parallel_size=tp))
            if p.verdict != DOES_NOT_FIT:
                tried.append(_describe(p, f"--tensor-parallel-size {tp}"))
                break
    base = replace(request, tensor_parallel_size=None)  # let the alternatives use every GPU
    current_bits = quant_bits(result.quantization)
    for quantization in ("fp8", "awq"):  # gptq-int4 weighs the same as awq
        if quant_bits(quantization) < current_bits:
            p = plan(arch, replace(base, quantization=quantization))
            if p.verdict != DOES_NOT_FIT:
                tried.append(_describe(p, f"--quantization {quantization} (TP={p.tensor_parallel_size})"))
                if p.fits:
                    break
    if result.kv_dtype != "fp8":
        p = plan(arch, replace(base, kv_cache_dtype="fp8", quantization=result.quantization))
        if p.verdict != DOES_NOT_FIT:
            tried.append(_describe(p, f"--kv-cache-dtype fp8 (TP={p.tensor_parallel_size})"))
    for smaller in sorted(smaller_models, key=lambda a: a.params, reverse=True):
        if smaller.params >= arch.params:
            continue
        p = plan(smaller, replace(base, quantization=None))
        if p.fits:
            tried.append(_describe(p, f"{smaller.name} ({smaller.quantization})"))
            break
    result.alternatives = tried
    return result
