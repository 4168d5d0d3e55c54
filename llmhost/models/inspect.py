"""Read a model folder (or a lone config.json) into an `Architecture`, with the real weight bytes.

Weight bytes come from safetensors headers (8-byte little-endian length, then JSON with each tensor's
dtype and shape), so nothing is loaded and torch is not needed; GGUF files count by their size.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from llmhost.models.planner import Architecture

SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8,
    "F32": 4, "I32": 4, "U32": 4,
    "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip
_TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


class ModelInspectError(ValueError):
    """The path is not a model we can read."""


def safetensors_bytes(path: Path) -> tuple[int, int]:
    """(tensor bytes, element count) of one .safetensors file, read from its header only."""
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ModelInspectError(f"{path}: not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", raw)
        if length > 100_000_000:
            raise ModelInspectError(f"{path}: not a safetensors file (header length {length})")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelInspectError(f"{path}: unreadable safetensors header: {exc}") from exc
    total = elements = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in SAFETENSORS_DTYPE_BYTES:
            raise ModelInspectError(f"{path}: tensor {name} has unknown dtype {info['dtype']}")
        count = math.prod(info["shape"])
        elements += count
        total += count * SAFETENSORS_DTYPE_BYTES[info["dtype"]]
    return total, elements


def quantization_of(config: dict[str, Any]) -> str:
    """The planner's quantization name for a config.json (its quantization_config, else torch_dtype)."""
    q = config.get("quantization_config") or {}
    method = str(q.get("quant_method", "")).lower()
    bits = q.get("bits") or q.get("w_bit")
    if method == "awq":
        return "awq"
    if method == "gptq":
        return "gptq-int8" if bits == 8 else "gptq-int4"
    if method in ("fp8", "fbgemm_fp8") or "fp8" in method:
        return "fp8"
    if method == "bitsandbytes":
        return "int8" if q.get("load_in_8bit") else "gptq-int4"  # 4-bit nf4: about the same bytes
    if method:
        return "int8" if bits == 8 else "gptq-int4" if bits == 4 else "bf16"
    dtype = config.get("torch_dtype") or config.get("dtype") or "bfloat16"
    return _TORCH_DTYPES.get(str(dtype), "bf16")


def architecture_from_config(config: dict[str, Any], name: str) -> Architecture:
    text = config.get("text_config") or config  # multimodal configs nest the language model
    merged = {**config, **text}
    try:
        hidden = merged["hidden_size"]
        heads = merged["num_attention_heads"]
        return Architecture(
            name=name,
            num_layers=merged["num_hidden_layers"],
            hidden_size=hidden,
            num_attention_heads=heads,
            num_kv_heads=merged.get("num_key_value_heads") or heads,
            head_dim=merged.get("head_dim") or hidden // heads,
            vocab_size=merged["vocab_size"],
            intermediate_size=merged["intermediate_size"],
            tie_word_embeddings=bool(merged.get("tie_word_embeddings", False)),
            max_context=merged.get("max_position_embeddings") or 4096,
            quantization=quantization_of(config),
        )
    except KeyError as exc:
        raise ModelInspectError(f"{name}: config.json lacks {exc.args[0]!r}") from exc


def inspect_model(path: str | Path) -> Architecture:
    """An `Architecture` from a model folder or a config.json, with measured weight bytes when present."""
    path = Path(path)
    if path.is_file() and path.suffix == ".json":
        folder, config_path = path.parent, path
    elif path.is_dir():
        folder, config_path = path, path / "config.json"
    else:
        raise ModelInspectError(f"{path}: expected a model folder or a config.json")
    if not config_path.is_file():
        raise ModelInspectError(f"{folder}: no config.json (a GGUF alone is not enough to plan)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelInspectError(f"{config_path}: {exc}") from exc
    name = folder.resolve().name if path.is_dir() else config.get("_name_or_path") or folder.resolve().name
    arch = architecture_from_config(config, str(name).rsplit("/", 1)[-1])

    weight_bytes, elements = 0, 0
    for file in sorted(folder.glob("*.safetensors")):
        nbytes, count = safetensors_bytes(file)
        weight_bytes += nbytes
        elements += count
    ggufs = sorted(folder.glob("*.gguf"))
    if not weight_bytes and ggufs:
        weight_bytes = ggufs[0].stat().st_size  # one quantization's file; others in the folder are ignored
        return Architecture(**{**arch.__dict__, "weight_bytes": weight_bytes, "quantization": "gguf-q4_k_m"})
    if weight_bytes:
        is_packed = arch.quantization not in ("bf16", "fp16", "fp32")
        # Packed int4/int8 tensors do not count parameters; keep the shapes' count for those.
        params = None if is_packed else elements
        return Architecture(**{**arch.__dict__, "weight_bytes": weight_bytes, "num_params": params})
    return arch
