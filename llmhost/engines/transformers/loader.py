"""Loading an HF model folder or a GGUF file with transformers, and the per-token byte table.

Only this package imports torch and transformers, and only when the `transformers` engine is chosen.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmhost.errors import ModelLoadError

from .vision import VisionModel, is_vision_config, processor_chat_template

log = logging.getLogger("llmhost.transformers")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# End-of-generation tokens beyond the declared EOS, as llama.cpp's vocabulary loader recognises them:
# chat models end a turn with these even when the config names only one EOS.
_EOG_TEXTS = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|end_of_text|>")


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel
    tokenizer: Any  # a transformers tokenizer
    device: torch.device
    dtype: torch.dtype
    max_position_embeddings: int | None
    eog_token_ids: frozenset[int]
    pad_token_id: int
    size_bytes: int
    chat_template: str | None = None
    vision: VisionModel | None = None  # a vision model's image side (vision.py); None: text only


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto`: float32 on CPU (bf16 matmuls fall back to slow paths on AVX2 CPUs), bf16 on a GPU
    that supports it, float16 otherwise."""
    if name != "auto":
        return DTYPES[name]
    if device.type == "cpu":
        return torch.float32
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def load(
    path: Path,
    model_format: str,
    device: torch.device,
    dtype_name: str,
    *,
    max_image_tokens: int | None = None,
) -> LoadedModel:
    """The model, its tokenizer and, for a vision model (Qwen2-VL, Qwen2.5-VL), its image processor."""
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # tqdm bars would flood the server log with carriage returns
    dtype = resolve_dtype(dtype_name, device)
    kwargs: dict[str, Any]
    if model_format == "gguf":
        # transformers dequantises every tensor of the GGUF to `dtype`; the tokenizer is rebuilt from
        # the GGUF's own vocabulary, so nothing is fetched from a hub.
        where, kwargs = str(path.parent), {"gguf_file": path.name}
        size_bytes = path.stat().st_size
    else:
        where, kwargs = str(path), {}
        size_bytes = sum(f.stat().st_size for f in path.glob("*") if f.suffix in (".safetensors", ".bin"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True, **kwargs)
        is_vision = model_format != "gguf" and is_vision_config(
            AutoConfig.from_pretrained(where, local_files_only=True)
        )
        if device.type == "cuda":  # straight onto the GPU, without a whole copy in host memory first
            kwargs["device_map"] = {"": device}
        model_class = AutoModelForImageTextToText if is_vision else AutoModelForCausalLM
        model = model_class.from_pretrained(where, local_files_only=True, dtype=dtype, **kwargs)
    except ImportError as exc:
        raise ModelLoadError(f"transformers could not load {path}: {exc}") from exc
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:  # e.g. truncated weights
        raise ModelLoadError(f"transformers could not load {path}: {type(exc).__name__}: {exc}") from exc
    model.to(device)
    model.eval()
    _check_cache_layers(model)
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    eog = _eog_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = min(eog) if eog else 0  # pads are masked out; any id in the vocabulary will do
    chat_template = getattr(tokenizer, "chat_template", None)
    vision = None
    if is_vision:
        vision = VisionModel.load(where, model, model.config, max_image_tokens)
        chat_template = chat_template or processor_chat_template(path)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        max_position_embeddings=getattr(config, "max_position_embeddings", None),
        eog_token_ids=eog,
        pad_token_id=int(pad),
        size_bytes=size_bytes,
        chat_template=chat_template,
        vision=vision,
    )


def _check_cache_layers(model: Any) -> None:
    """The batch splices KV caches row by row, which only holds for plain full-attention layers."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=model.config)
    odd = {type(layer).__name__ for layer in cache.layers if type(layer) is not DynamicLayer}
    if odd:
        raise ModelLoadError(
            "the transformers engine does not support this model's cache layers yet "
            f"({', '.join(sorted(odd))}: sliding-window or indexed attention)"
        )


def _eog_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in _EOG_TEXTS if t in vocab and t in tokenizer.all_special_tokens)
    return frozenset(ids)


def token_bytes_table(tokenizer: Any, vocab_size: int) -> list[bytes]:
    """The bytes each token adds to visible text; special tokens add none (as llama.cpp's pieces).

    Streaming feeds these bytes to `StopStringMatcher`, which handles characters split across tokens.
    """
    special = set(tokenizer.all_special_ids)
    # The embedding matrix may have more rows than the tokenizer has tokens (padded for speed).
    tokens = tokenizer.convert_ids_to_tokens(list(range(min(vocab_size, len(tokenizer)))))
    tokens += [None] * (vocab_size - len(tokens))
    kind = _decoder_kind(tokenizer)
    byte_decoder = {c: b for b, c in _bytes_to_unicode().items()} if kind == "bytelevel" else {}
    byte_fallback = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
    table: list[bytes] = []
    for i, tok in enumerate(tokens):
        if tok is None or i in special:
            table.append(b"")
        elif kind == "bytelevel" and all(c in byte_decoder for c in tok):
            table.append(bytes(byte_decoder[c] for c in tok))
        elif m := byte_fallback.match(tok):
            table.append(bytes([int(m.group(1), 16)]))
        elif kind == "metaspace":
            table.append(tok.replace("\u2581", " ").encode("utf-8"))
        else:
            table.append(tokenizer.decode([i], skip_special_tokens=True).encode("utf-8"))
    return table


def _decoder_kind(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return "other"
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    types = {decoder.get("type")} | {d.get("type") for d in decoder.get("decoders", []) or []}
    if "ByteLevel" in types:
        return "bytelevel"
    if "Metaspace" in types or "Replace" in types:
        return "metaspace"
    return "other"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte <-> printable character map used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def detokenize(table: Sequence[bytes], token_ids: Sequence[int]) -> str:
    return b"".join(table[t] if 0 <= t < len(table) else b"" for t in token_ids).decode("utf-8", "replace")
