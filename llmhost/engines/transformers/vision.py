"""Images for a Qwen2-VL / Qwen2.5-VL model: preparing each one, and what the batch needs to read it.

- `prepare_image` runs the model's own image processor (the PIL one: no torchvision), which resizes
  the image to the model's pixel budget and cuts it into patches; the image becomes one token per
  `merge_size x merge_size` patches.
- `embed_prompt` builds a prompt's input embeddings with its images' features written over their
  placeholder tokens. Each prompt's images go through the vision tower on their own, at the offsets
  the pipeline placed them, so a row never depends on what else is in the batch (and a stray
  placeholder token in some other prompt's text cannot shift anyone's features).
- `rope_positions` gives the prompt's 3-D rotary positions (M-RoPE: time, height, width for image
  tokens; the same value thrice for text) with the library's own `get_rope_index`, and the offset
  (`rope delta`) every later token's position carries. transformers keeps that delta on the model
  (`model.rope_deltas`), one value for the whole batch; with rows joining and leaving, the engine
  keeps it per row instead and passes positions explicitly.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmhost.errors import InvalidRequest, ModelLoadError
from llmhost.types import PromptImage

log = logging.getLogger("llmhost.transformers")

# Architectures whose image tokens and M-RoPE positions this module handles.
VISION_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")


@dataclass(frozen=True)
class ImageFeatures:
    """What `prepare_image` makes of one image: its patches and their grid (time, height, width)."""

    pixel_values: torch.Tensor  # [patches, channels x temporal x patch x patch]
    grid_thw: torch.Tensor  # [1, 3]


class VisionModel:
    def __init__(self, model: Any, image_processor: Any, image_token_id: int) -> None:
        self._model = model
        self.image_processor = image_processor
        self.image_token_id = image_token_id
        self.merge_size = int(getattr(image_processor, "merge_size", 2))

    @classmethod
    def load(cls, where: str, model: Any, config: Any, max_image_tokens: int | None) -> VisionModel:
        from transformers import AutoImageProcessor

        try:
            processor = AutoImageProcessor.from_pretrained(where, local_files_only=True)
        except (OSError, ValueError, ImportError) as exc:
            raise ModelLoadError(f"the model's image processor could not be loaded: {exc}") from exc
        vision = cls(model, processor, int(config.image_token_id))
        if max_image_tokens is not None:
            vision.limit_tokens(max_image_tokens)
        return vision

    def limit_tokens(self, max_tokens: int) -> None:
        """Lower the processor's pixel budget so that no image becomes more than `max_tokens` tokens."""
        size = self.image_processor.size
        token_pixels = (int(self.image_processor.patch_size) * self.merge_size) ** 2
        longest = min(int(size.longest_edge), max_tokens * token_pixels)
        shortest = min(int(size.shortest_edge), longest)
        self.image_processor.size = type(size)(shortest_edge=shortest, longest_edge=longest)

    def prepare_image(self, image: Any) -> PromptImage:
        try:
            out = self.image_processor(images=[image], return_tensors="pt")
        except ValueError as exc:  # e.g. smart_resize: "absolute aspect ratio must be smaller than 200"
            raise InvalidRequest(f"the model cannot read this image: {exc}") from None
        grid = out["image_grid_thw"]
        num_tokens = int(grid.prod()) // self.merge_size**2
        return PromptImage(num_tokens, ImageFeatures(out["pixel_values"], grid))

    def embed_prompt(self, prompt_ids: torch.Tensor, images: tuple[PromptImage, ...]) -> torch.Tensor:
        """[tokens, hidden]: the prompt's token embeddings, its images' features at their offsets."""
        embeds = self._model.get_input_embeddings()(prompt_ids)
        pixels = torch.cat([i.data.pixel_values for i in images]).to(prompt_ids.device)
        grids = torch.cat([i.data.grid_thw for i in images]).to(prompt_ids.device)
        features = self._model.model.get_image_features(pixels, image_grid_thw=grids).pooler_output
        for image, feature in zip(images, features, strict=True):
            embeds[image.offset : image.offset + image.num_tokens] = feature.to(embeds.dtype)
        return embeds

    def rope_positions(
        self, prompt_ids: torch.Tensor, images: tuple[PromptImage, ...]
    ) -> tuple[torch.Tensor, int]:
        """([3, tokens] positions, the rope delta) of one prompt with images."""
        types = torch.zeros_like(prompt_ids, dtype=torch.int)
        for image in images:
            types[image.offset : image.offset + image.num_tokens] = 1
        grids = torch.cat([i.data.grid_thw for i in images]).to(prompt_ids.device)
        positions, deltas = self._model.model.get_rope_index(
            input_ids=prompt_ids[None], mm_token_type_ids=types[None], image_grid_thw=grids
        )
        return positions[:, 0, :], int(deltas.reshape(-1)[0])

    def check_prompt(self, prompt: list[int], images: tuple[PromptImage, ...]) -> None:
        """Each image's tokens must be placeholders inside the prompt (the pipeline puts them there)."""
        for image in images:
            end = image.offset + image.num_tokens
            if not isinstance(image.data, ImageFeatures) or image.offset < 0 or end > len(prompt):
                raise InvalidRequest("an image does not fit where the prompt places it", param="messages")
            if any(t != self.image_token_id for t in prompt[image.offset : end]):
                raise InvalidRequest("an image's place in the prompt holds other tokens", param="messages")


def is_vision_config(config: Any) -> bool:
    """A config with a vision tower; one this engine cannot read images for is a load error."""
    if getattr(config, "vision_config", None) is None:
        return False
    if config.model_type not in VISION_MODEL_TYPES:
        raise ModelLoadError(
            f"the transformers engine reads images for Qwen2-VL and Qwen2.5-VL models; '{config.model_type}' "
            "is not supported yet"
        )
    return True


def processor_chat_template(folder: Path) -> str | None:
    """The chat template a vision model keeps beside its processor (`chat_template.json`, or
    `chat_template.jinja`), where its tokenizer has none: Qwen2.5-VL's folders ship it that way."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    path = folder / "chat_template.json"
    if not path.is_file():
        return None
    try:
        template = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None
    return template if isinstance(template, str) else None
