"""Built-in architectures, so a team can plan before downloading anything.

Numbers are from each model's public config.json (text part only for Qwen2.5-VL); `num_params` is the
published count (model card / safetensors metadata) and a test checks it against the shapes.
"""

from __future__ import annotations

import difflib
from dataclasses import replace

from llmhost.models.planner import Architecture

_Q25_VOCAB_SMALL, _Q25_VOCAB = 151936, 152064


def _arch(name, layers, hidden, heads, kv, head_dim, vocab, inter, tied, params, ctx) -> Architecture:
    return Architecture(
        name=name,
        num_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        vocab_size=vocab,
        intermediate_size=inter,
        tie_word_embeddings=tied,
        num_params=params,
        max_context=ctx,
    )


# fmt: off
_QWEN25 = {  # size: layers, hidden, heads, kv, head_dim, vocab, intermediate, tied, params
    "0.5B": (24, 896, 14, 2, 64, _Q25_VOCAB_SMALL, 4864, True, 494_032_768),
    "1.5B": (28, 1536, 12, 2, 128, _Q25_VOCAB_SMALL, 8960, True, 1_543_714_304),
    "3B": (36, 2048, 16, 2, 128, _Q25_VOCAB_SMALL, 11008, True, 3_085_938_688),
    "7B": (28, 3584, 28, 4, 128, _Q25_VOCAB, 18944, False, 7_615_616_512),
    "14B": (48, 5120, 40, 8, 128, _Q25_VOCAB, 13824, False, 14_770_033_664),
    "32B": (64, 5120, 40, 8, 128, _Q25_VOCAB, 27648, False, 32_763_876_352),
    "72B": (80, 8192, 64, 8, 128, _Q25_VOCAB, 29568, False, 72_706_203_648),
}
_QWEN25_VL = {  # language model part; params include the ~0.67B vision tower
    "3B": (36, 2048, 16, 2, 128, _Q25_VOCAB_SMALL, 11008, True, 3_754_622_976),
    "7B": (28, 3584, 28, 4, 128, _Q25_VOCAB, 18944, False, 8_292_166_656),
}
_QWEN3 = {
    "0.6B": (28, 1024, 16, 8, 128, 151936, 3072, True, 596_049_920),
    "1.7B": (28, 2048, 16, 8, 128, 151936, 6144, True, 1_720_574_976),
    "4B": (36, 2560, 32, 8, 128, 151936, 9728, True, 4_022_468_096),
    "8B": (36, 4096, 32, 8, 128, 151936, 12288, False, 8_190_735_360),
    "14B": (40, 5120, 40, 8, 128, 151936, 17408, False, 14_768_307_200),
    "32B": (64, 5120, 64, 8, 128, 151936, 25600, False, 32_762_123_264),
}
_LLAMA = {  # name: ..., max context
    "Llama-3.2-1B": (16, 2048, 32, 8, 64, 128256, 8192, True, 1_235_814_400, 131072),
    "Llama-3.2-3B": (28, 3072, 24, 8, 128, 128256, 8192, True, 3_212_749_824, 131072),
    "Llama-3.1-8B": (32, 4096, 32, 8, 128, 128256, 14336, False, 8_030_261_248, 131072),
    "Llama-3.1-70B": (80, 8192, 64, 8, 128, 128256, 28672, False, 70_553_706_496, 131072),
    "Llama-3.3-70B": (80, 8192, 64, 8, 128, 128256, 28672, False, 70_553_706_496, 131072),
    "Meta-Llama-3-8B": (32, 4096, 32, 8, 128, 128256, 14336, False, 8_030_261_248, 8192),
    "Meta-Llama-3-70B": (80, 8192, 64, 8, 128, 128256, 28672, False, 70_553_706_496, 8192),
}
_SMOLLM2 = {
    "135M": (30, 576, 9, 3, 64, 49152, 1536, True, 134_515_008),
    "360M": (32, 960, 15, 5, 64, 49152, 2560, True, 361_821_120),
    "1.7B": (24, 2048, 32, 32, 64, 49152, 8192, True, 1_711_376_384),
}
# fmt: on

_QWEN_QUANT_SUFFIXES = {"-AWQ": "awq", "-GPTQ-Int4": "gptq-int4", "-GPTQ-Int8": "gptq-int8"}


def _build() -> dict[str, Architecture]:
    models: dict[str, Architecture] = {}

    def add(arch: Architecture, *names: str, quantization: str = "bf16") -> None:
        for name in names:
            models[name.lower()] = replace(arch, name=name, quantization=quantization)

    for size, dims in _QWEN25.items():
        arch = _arch(f"Qwen2.5-{size}", *dims, 32768)
        add(arch, f"Qwen2.5-{size}", f"Qwen2.5-{size}-Instruct")
        for suffix, quantization in _QWEN_QUANT_SUFFIXES.items():
            add(arch, f"Qwen2.5-{size}-Instruct{suffix}", quantization=quantization)
        if size != "72B":  # Qwen2.5-Coder comes in 0.5B–32B with the same shapes
            add(arch, f"Qwen2.5-Coder-{size}", f"Qwen2.5-Coder-{size}-Instruct")
            for suffix, quantization in _QWEN_QUANT_SUFFIXES.items():
                add(arch, f"Qwen2.5-Coder-{size}-Instruct{suffix}", quantization=quantization)
    for size, dims in _QWEN25_VL.items():
        arch = _arch(f"Qwen2.5-VL-{size}", *dims, 128000)
        add(arch, f"Qwen2.5-VL-{size}-Instruct")
        add(arch, f"Qwen2.5-VL-{size}-Instruct-AWQ", quantization="awq")
    for size, dims in _QWEN3.items():
        arch = _arch(f"Qwen3-{size}", *dims, 40960)
        add(arch, f"Qwen3-{size}", f"Qwen3-{size}-Base")
        add(arch, f"Qwen3-{size}-FP8", quantization="fp8")
        if size in ("4B", "8B", "14B", "32B"):
            add(arch, f"Qwen3-{size}-AWQ", quantization="awq")
    for name, dims in _LLAMA.items():
        arch = _arch(name, *dims)
        add(arch, name, f"{name}-Instruct")
    add(models["llama-3.1-8b-instruct"], "Meta-Llama-3.1-8B", "Meta-Llama-3.1-8B-Instruct")
    add(models["llama-3.1-70b-instruct"], "Meta-Llama-3.1-70B", "Meta-Llama-3.1-70B-Instruct")
    for size, dims in _SMOLLM2.items():
        arch = _arch(f"SmolLM2-{size}", *dims, 8192)
        add(arch, f"SmolLM2-{size}", f"SmolLM2-{size}-Instruct")
    return models


CATALOGUE: dict[str, Architecture] = _build()


def lookup(name: str) -> Architecture | None:
    """A catalogue entry by name, case-insensitive, with or without an `org/` prefix."""
    return CATALOGUE.get(name.rsplit("/", 1)[-1].lower())


def close_names(name: str, n: int = 5) -> list[str]:
    keys = difflib.get_close_matches(name.rsplit("/", 1)[-1].lower(), CATALOGUE, n=n, cutoff=0.5)
    return [CATALOGUE[k].name for k in keys]


_FAMILIES = ("Qwen2.5-VL-", "Qwen2.5-Coder-", "Qwen2.5-", "Qwen3-", "Llama-3", "Meta-Llama-3", "SmolLM2-")


def family_of(arch: Architecture) -> str:
    for prefix in _FAMILIES:
        if arch.name.startswith(prefix):
            return prefix
    return arch.name


def smaller_in_family(arch: Architecture) -> list[Architecture]:
    """Same-family instruct models with fewer parameters, in their stored (16-bit) and AWQ forms."""
    family = family_of(arch)
    return [
        a
        for a in CATALOGUE.values()
        if family_of(a) == family
        and (a.name.endswith("-Instruct") or a.name.endswith("-AWQ"))
        and a.params < arch.params
    ]
