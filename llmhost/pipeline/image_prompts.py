"""Putting a conversation's images into its prompt.

The chat template of a vision model writes one placeholder token per image (Qwen2-VL's
`<|image_pad|>`, between `<|vision_start|>` and `<|vision_end|>`); the model reads an image as many
tokens as its size asks. So each placeholder is widened to the number of tokens the engine prepared
the image into, and the prepared image records where its tokens start. The context check, usage and
admission then count image tokens like any others (vLLM does the same).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from llmhost.errors import InvalidRequest
from llmhost.media import ImagePart, image_error
from llmhost.types import EngineInfo, PromptImage


def refuse_images_unless_accepted(parts: Sequence[ImagePart], info: EngineInfo) -> None:
    """A model that reads text only gets no image: a 400 naming the first, never a silent drop."""
    if parts and not info.accepts_images:
        raise image_error(
            parts[0],
            f"the served model ({info.model_name}, engine {info.engine}) reads text only and cannot take "
            "images; serve a vision model such as Qwen2.5-VL with an engine that reads images "
            "(--engine transformers)",
        )


def prepare_images(engine: Any, images: Sequence[Any], parts: Sequence[ImagePart]) -> list[PromptImage]:
    """Each decoded image as the engine reads it (`ImageEngine.prepare_image`); a refusal names its part."""
    prepared = []
    for image, part in zip(images, parts, strict=True):
        try:
            prepared.append(engine.prepare_image(image))
        except InvalidRequest as exc:
            raise image_error(part, exc.message) from None
    return prepared


def place_images(
    token_ids: Sequence[int], images: Sequence[PromptImage], image_token_id: int, parts: Sequence[ImagePart]
) -> tuple[list[int], tuple[PromptImage, ...]]:
    """The prompt with each placeholder widened to its image's tokens, and the images with their offsets."""
    found = [i for i, t in enumerate(token_ids) if t == image_token_id]
    if len(found) != len(images):
        raise image_error(
            parts[0],
            f"the conversation carries {len(images)} image(s) but its rendered prompt has {len(found)} "
            "image placeholder(s): the chat template does not place images, or a message's text holds "
            "the placeholder token itself",
        )
    out: list[int] = []
    placed = []
    start = 0
    for at, image in zip(found, images, strict=True):
        out.extend(token_ids[start:at])
        placed.append(dataclasses.replace(image, offset=len(out)))
        out.extend([image_token_id] * image.num_tokens)
        start = at + 1
    out.extend(token_ids[start:])
    return out, tuple(placed)
