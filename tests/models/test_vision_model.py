"""The tiny Qwen2.5-VL the vision tests serve (tests/models/vision_model.py): it loads through the same
transformers classes a real Qwen2.5-VL folder does, without torchvision, and repeats from its seed."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from tests.models.vision_model import CHAT_TEMPLATE, write_vision_model  # noqa: E402


def test_same_seed_same_weights_other_seed_others(vision_model_path: Path, tmp_path: Path):
    again = load_file(write_vision_model(tmp_path / "again") / "model.safetensors")
    other = load_file(write_vision_model(tmp_path / "other", seed=1) / "model.safetensors")
    first = load_file(vision_model_path / "model.safetensors")
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_loads_as_a_qwen2_5_vl_with_a_pil_image_processor(vision_model_path: Path):
    from PIL import Image
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    config = AutoConfig.from_pretrained(vision_model_path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(vision_model_path, local_files_only=True)
    processor = AutoImageProcessor.from_pretrained(vision_model_path, local_files_only=True)
    assert config.model_type == "qwen2_5_vl"
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    placeholder = "<|vision_start|><|image_pad|><|vision_end|>"
    assert len(tokenizer(placeholder, add_special_tokens=False)["input_ids"]) == 3  # three special tokens
    assert type(processor).__name__ == "Qwen2VLImageProcessorPil"  # needs no torchvision
    out = processor(images=[Image.new("RGB", (150, 100), "red")], return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, 8, 10]]  # resized to a multiple of 28: 112 x 140
    assert placeholder in CHAT_TEMPLATE
