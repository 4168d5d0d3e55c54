"""Placing a conversation's images in its prompt's tokens (llmhost/pipeline/image_prompts.py)."""

from __future__ import annotations

import pytest

from llmhost.errors import InvalidRequest
from llmhost.media import ImagePart
from llmhost.pipeline.image_prompts import place_images, refuse_images_unless_accepted
from llmhost.types import EngineInfo, PromptImage

PAD = 99
PARTS = [ImagePart("data:", "messages[0].content[0]"), ImagePart("data:", "messages[2].content[1]")]


def test_each_placeholder_is_widened_to_its_images_tokens():
    tokens, placed = place_images(
        [1, PAD, 2, 3, PAD, 4], [PromptImage(3, "a"), PromptImage(2, "b")], PAD, PARTS
    )
    assert tokens == [1, PAD, PAD, PAD, 2, 3, PAD, PAD, 4]
    assert [(p.offset, p.num_tokens, p.data) for p in placed] == [(1, 3, "a"), (6, 2, "b")]


@pytest.mark.parametrize("prompt", [[1, 2], [PAD, PAD, PAD]])
def test_placeholders_that_do_not_match_the_images_are_a_400(prompt):
    with pytest.raises(InvalidRequest) as info:
        place_images(prompt, [PromptImage(3, "a"), PromptImage(2, "b")], PAD, PARTS)
    assert info.value.param == "messages[0].content[0]" and "image placeholder" in info.value.message


def test_a_model_that_reads_text_only_refuses_the_first_image():
    info = EngineInfo("llama.cpp", "/m.gguf", "smol", 1024, 8, "cpu", 1, 256, None, "", "")
    with pytest.raises(InvalidRequest) as refused:
        refuse_images_unless_accepted(PARTS, info)
    assert refused.value.param == "messages[0].content[0]"
    assert "smol, engine llama.cpp" in refused.value.message and "cannot take images" in refused.value.message
    refuse_images_unless_accepted([], info)  # no images, nothing to refuse
