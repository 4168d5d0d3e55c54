"""The tiny Qwen2.5-VL of `vision_model.py` as llama.cpp reads a vision model: a GGUF of the language
model (architecture `qwen2vl`, M-RoPE sections in `rope.dimension_sections`) and an `mmproj` GGUF of the
vision tower and merger (projector type `qwen2.5vl_merger`), written with the `gguf` package.

The layout follows llama.cpp's own `convert_hf_to_gguf.py` (its `Qwen2VLModel` and
`Qwen2VLVisionModel`): tensor names through gguf's name maps, the vision blocks' fused `qkv` split into
q, k and v, the 3-D patch convolution split into its two temporal slices, and the same `clip.*` keys.
That script needs a tokenizer llama.cpp recognises by hash; this one writes the byte-level vocabulary
and merges directly, so it needs neither network nor sentencepiece.

Run it: `python -m tests.models.vision_gguf HF_FOLDER OUT_DIR` (after `python -m tests.models.vision_model`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gguf
import numpy as np


def write_vision_gguf(hf_folder: Path, out_dir: Path) -> tuple[Path, Path]:
    """Write (model GGUF, mmproj GGUF) for the HF folder, float32, and return their paths."""
    from safetensors.numpy import load_file

    out_dir.mkdir(parents=True, exist_ok=True)
    config = json.loads((hf_folder / "config.json").read_text())
    tensors = load_file(hf_folder / "model.safetensors")
    model_path = out_dir / f"{hf_folder.name}-f32.gguf"
    mmproj_path = out_dir / f"mmproj-{hf_folder.name}-f32.gguf"
    _write_text_model(hf_folder, config, tensors, model_path)
    _write_mmproj(hf_folder, config, tensors, mmproj_path)
    return model_path, mmproj_path


def _write_text_model(hf_folder: Path, config: dict, tensors: dict[str, np.ndarray], path: Path) -> None:
    text = config["text_config"]
    arch = gguf.MODEL_ARCH.QWEN2VL
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(hf_folder.name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(text["max_position_embeddings"])
    writer.add_embedding_length(text["hidden_size"])
    writer.add_feed_forward_length(text["intermediate_size"])
    writer.add_block_count(text["num_hidden_layers"])
    writer.add_head_count(text["num_attention_heads"])
    writer.add_head_count_kv(text["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(text["rms_norm_eps"])
    rope = text["rope_parameters"]
    writer.add_rope_freq_base(rope["rope_theta"])
    writer.add_rope_dimension_sections([*rope["mrope_section"], 0][:4])
    _add_vocabulary(writer, hf_folder, text)
    names = gguf.get_tensor_name_map(arch, text["num_hidden_layers"])
    for name, data in tensors.items():
        if not name.startswith("visual."):
            writer.add_tensor(_mapped(names, name), data)
    _finish(writer)


def _add_vocabulary(writer: gguf.GGUFWriter, hf_folder: Path, text: dict) -> None:
    """The byte-level vocabulary as llama.cpp's BPE reads it (`gpt2` model, Qwen2's pre-tokenizer)."""
    tokenizer = json.loads((hf_folder / "tokenizer.json").read_text())
    pieces = {i: t for t, i in tokenizer["model"]["vocab"].items()}
    special = {t["id"]: t["content"] for t in tokenizer["added_tokens"]}
    size = max([*pieces, *special]) + 1
    tokens, types = [], []
    for i in range(size):
        if i in special:
            tokens.append(special[i])
            types.append(gguf.TokenType.CONTROL)
        else:
            tokens.append(pieces[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    merges = tokenizer["model"]["merges"]  # [["Ġ", "t"], …] (older files: "Ġ t")
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(text["bos_token_id"])
    writer.add_eos_token_id(text["eos_token_id"])
    writer.add_pad_token_id(text["pad_token_id"])
    writer.add_add_bos_token(False)
    template = json.loads((hf_folder / "chat_template.json").read_text())["chat_template"]
    writer.add_chat_template(template)


def _write_mmproj(hf_folder: Path, config: dict, tensors: dict[str, np.ndarray], path: Path) -> None:
    vision = config["vision_config"]
    preprocessor = json.loads((hf_folder / "preprocessor_config.json").read_text())
    writer = gguf.GGUFWriter(path, "clip")
    writer.add_type(gguf.GGUFType.MMPROJ)
    writer.add_name(hf_folder.name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_bool(gguf.Keys.Clip.HAS_VISION_ENCODER, True)
    writer.add_vision_projection_dim(config["text_config"]["hidden_size"])
    writer.add_vision_image_size(560)  # what the converter writes for Qwen2-VL (no fixed size)
    writer.add_vision_patch_size(vision["patch_size"])
    writer.add_vision_embedding_length(vision["hidden_size"])
    writer.add_vision_feed_forward_length(vision["intermediate_size"])
    writer.add_vision_block_count(vision["depth"])
    writer.add_vision_head_count(vision["num_heads"])
    writer.add_vision_image_mean(preprocessor["image_mean"])
    writer.add_vision_image_std(preprocessor["image_std"])
    writer.add_clip_projector_type(gguf.VisionProjectorType.QWEN25VL)
    writer.add_vision_use_silu(True)
    full = vision["fullatt_block_indexes"]  # every n-th block attends to the whole image
    writer.add_vision_n_wa_pattern(full[0] + 1)
    writer.add_vision_attention_layernorm_eps(config["text_config"]["rms_norm_eps"])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, vision["depth"])
    patch = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.V_ENC_EMBD_PATCH]
    for name, data in tensors.items():
        if not name.startswith("visual."):
            continue
        if ".qkv." in name:
            for part, piece in zip("qkv", np.split(data, 3, axis=0), strict=True):
                writer.add_tensor(_mapped(names, name.replace("qkv", part)), np.ascontiguousarray(piece))
        elif "patch_embed.proj.weight" in name:  # [out, in, time 2, h, w]: one 2-D kernel per frame
            writer.add_tensor(f"{patch}.weight", np.ascontiguousarray(data[:, :, 0]))
            writer.add_tensor(f"{patch}.weight.1", np.ascontiguousarray(data[:, :, 1]))
        else:
            writer.add_tensor(_mapped(names, name), data)
    _finish(writer)


def _mapped(names: gguf.TensorNameMap, name: str) -> str:
    mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
    if mapped is None:
        raise ValueError(f"no GGUF name for tensor {name!r}")
    return mapped


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hf_folder", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    for path in write_vision_gguf(args.hf_folder, args.out_dir):
        print(path)


if __name__ == "__main__":
    main()
