"""A tiny random-weight Qwen2.5-VL written as a Hugging Face folder, built here (no hub access).

The folder has what `Qwen/Qwen2.5-VL-3B-Instruct` has, shrunk: `config.json` (a vision tower and a
language model of a few layers), `model.safetensors`, a byte-level BPE tokenizer with Qwen's special
tokens (`<|im_start|>`, `<|vision_start|>`, `<|image_pad|>`…), the PIL image processor's
`preprocessor_config.json` (no torchvision needed) and the Qwen2-VL chat template in
`chat_template.json`, where the real model keeps it. The weights are random but fixed by the seed,
so greedy answers repeat from one run to the next.

`write_text_model` writes the same language model without its vision tower (a Qwen2 causal LM with
the same tokenizer): the text fallback of seed 000's chain.

Run it to write a folder: `python -m tests.models.vision_model OUT_DIR [--text]`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# Qwen2-VL's chat template (chat_template.json of Qwen2-VL and Qwen2.5-VL), verbatim.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2's pre-tokenizer split (its tokenizer.json), which llama.cpp's `qwen2` pre-tokenizer implements.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
# A few merges (byte-level spelling: "Ġ" is a space), so the vocabulary is a real BPE one.
MERGES = (("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "s"), ("Ġ", "is"), ("a", "t"), ("Ġ", "a"), ("i", "n"))

# The image processor's budget: 56x56 to 224x224 pixels, 4 to 64 image tokens (a 28x28 block each).
MIN_PIXELS = 56 * 56
MAX_PIXELS = 224 * 224
PATCH_SIZE = 14
MERGE_SIZE = 2
# Larger than transformers' 0.02, so the random logits are far apart: greedy answers do not sit on
# near-ties that a different (but correct) order of float operations could flip.
INITIALIZER_RANGE = 0.5


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" bars would fill the test log


def write_tokenizer(out: Path) -> None:
    """A byte-level BPE with Qwen2's pre-tokenizer, every byte a token plus a few merges, and Qwen's
    special tokens: what llama.cpp's `qwen2` BPE reads the same way (tests/models/vision_gguf.py)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for left, right in MERGES:
        vocab[left + right] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=list(MERGES)))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS,
        model_max_length=4096,
    )
    fast.save_pretrained(out)


def _token_ids(out: Path) -> dict[str, int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    return {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS} | {"vocab": len(tokenizer)}


def _text_config(ids: dict[str, int]) -> dict:
    return {
        "vocab_size": ids["vocab"],
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "initializer_range": INITIALIZER_RANGE,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": False,
    }


def write_vision_model(out: Path, *, seed: int = 0) -> Path:
    """Write the tiny Qwen2.5-VL to `out` (created) and return it."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    _quiet()
    out.mkdir(parents=True, exist_ok=True)
    write_tokenizer(out)
    ids = _token_ids(out)
    text = _text_config(ids)
    # head_dim 16: 8 rotary frequencies, split over (time, height, width).
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config={
            # 4 blocks, windowed and full attention alternating: llama.cpp's converter maps the
            # merger's `mlp.2` through the block numbers, so fewer than 3 blocks cannot be converted.
            "depth": 4,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": PATCH_SIZE,
            "spatial_merge_size": MERGE_SIZE,
            "temporal_patch_size": 2,
            # Qwen2.5-VL's own window (112 pixels, 4x4 tokens): llama.cpp's clip assumes it (its GGUF
            # has no key for it), so another size would make the two encoders attend differently.
            "window_size": 112,
            "fullatt_block_indexes": [1, 3],
            "initializer_range": INITIALIZER_RANGE,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.save_pretrained(out)
    # As Qwen/Qwen2.5-VL-3B-Instruct's own file is written (the pixel budget as min/max_pixels).
    preprocessor = {
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
        "patch_size": PATCH_SIZE,
        "temporal_patch_size": 2,
        "merge_size": MERGE_SIZE,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
    }
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    (out / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}, indent=2))
    return out


def write_text_model(out: Path, *, seed: int = 0) -> Path:
    """Write the language model alone (Qwen2 architecture, same tokenizer, a plain ChatML template)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    _quiet()
    out.mkdir(parents=True, exist_ok=True)
    write_tokenizer(out)
    ids = _token_ids(out)
    config = Qwen2Config(**_text_config(ids), rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).eval().save_pretrained(out)
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--text", action="store_true", help="the text-only sibling (no vision tower)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write = write_text_model if args.text else write_vision_model
    print(write(args.out, seed=args.seed))


if __name__ == "__main__":
    main()
