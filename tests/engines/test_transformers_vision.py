"""The transformers engine on a vision model: the tiny random-weight Qwen2.5-VL of
tests/models/vision_model.py, loaded through the real classes. Greedy output with an image equals
transformers' own `model.generate` with the processor's inputs; rows with different images (and text
rows) decode in one batch exactly as each alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from llmhost.errors import InvalidRequest  # noqa: E402
from llmhost.media import ImagePart  # noqa: E402
from llmhost.pipeline.image_prompts import place_images  # noqa: E402
from llmhost.types import SamplingParams  # noqa: E402

IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
WITH_IMAGE = f"<|im_start|>user\n{IMAGE}What is this?<|im_end|>\n<|im_start|>assistant\n"
TWO_IMAGES = f"<|im_start|>user\n{IMAGE}and{IMAGE}Which is larger?<|im_end|>\n<|im_start|>assistant\n"
TEXT_ONLY = "<|im_start|>user\nWhat is this?<|im_end|>\n<|im_start|>assistant\n"
GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)


def picture(seed: int, size: tuple[int, int] = (150, 100)) -> Image.Image:
    """A noisy picture (a flat one gives every patch the same features), the same for the same seed."""
    pixels = torch.randint(
        0, 256, (size[1], size[0], 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )
    return Image.fromarray(pixels.numpy())


@pytest.fixture(scope="module")
async def vl_engine(vision_model_path: Path):
    from llmhost.engines.transformers.engine import TransformersEngine

    eng = TransformersEngine(
        vision_model_path,
        model_format="hf",
        model_name="tiny-vl",
        max_model_len=1024,
        max_num_seqs=4,
        threads=1,
        dtype="float32",
        gpu="none",
    )
    await eng.start()
    yield eng
    await eng.close()


def prompt_with(engine, text: str, images: list[Image.Image]):
    ids = engine.tokenize(text)
    if not images:
        return ids, ()
    prepared = [engine.prepare_image(i) for i in images]
    parts = [ImagePart("data:", f"messages[0].content[{i}]") for i in range(len(images))]
    return place_images(ids, prepared, engine.info().image_token_id, parts)


async def run(engine, text: str, images: list[Image.Image], params: SamplingParams = GREEDY) -> list[int]:
    ids, placed = prompt_with(engine, text, images)
    stream = engine.generate(ids, params, images=placed) if placed else engine.generate(ids, params)
    return [t async for delta in stream for t in delta.token_ids]


def reference(engine, text: str, images: list[Image.Image], n: int) -> list[int]:
    """transformers' own greedy `generate` with the image processor's tensors (its M-RoPE path)."""
    ids, placed = prompt_with(engine, text, images)
    x = torch.tensor([ids])
    image_token_id = engine.info().image_token_id
    with torch.inference_mode():
        out = engine._loaded.model.generate(
            input_ids=x,
            attention_mask=torch.ones_like(x),
            pixel_values=torch.cat([p.data.pixel_values for p in placed]),
            image_grid_thw=torch.cat([p.data.grid_thw for p in placed]),
            mm_token_type_ids=(x == image_token_id).int(),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
        )
    return out[0, len(ids) :].tolist()


async def test_info_says_it_takes_images_and_the_template_comes_from_chat_template_json(vl_engine):
    info = vl_engine.info()
    assert info.accepts_images and info.image_token_id == vl_engine.tokenize("<|image_pad|>")[0]
    assert "<|vision_start|><|image_pad|><|vision_end|>" in info.chat_template


async def test_an_image_becomes_one_token_per_28x28_block(vl_engine):
    assert vl_engine.prepare_image(picture(1, (150, 100))).num_tokens == 4 * 5  # resized to 112 x 140
    assert vl_engine.prepare_image(picture(1, (1000, 1000))).num_tokens == 64  # the 224 x 224 budget
    assert vl_engine.prepare_image(picture(1, (10, 10))).num_tokens == 4  # at least 56 x 56
    with pytest.raises(InvalidRequest, match="aspect ratio"):
        vl_engine.prepare_image(picture(1, (4000, 10)))


@pytest.mark.parametrize("images", [1, 2], ids=["one image", "two images"])
async def test_greedy_equals_transformers_generate(vl_engine, images):
    text, pictures = (
        (WITH_IMAGE, [picture(1)]) if images == 1 else (TWO_IMAGES, [picture(1), picture(2, (60, 90))])
    )
    mine = await run(vl_engine, text, pictures)
    assert mine == await asyncio.to_thread(reference, vl_engine, text, pictures, GREEDY.max_tokens)


async def test_the_image_changes_the_answer(vl_engine):
    answers = [await run(vl_engine, WITH_IMAGE, [picture(1)]), await run(vl_engine, WITH_IMAGE, [picture(2)])]
    answers.append(await run(vl_engine, TEXT_ONLY, []))
    assert len({tuple(a) for a in answers}) == 3


async def test_rows_with_different_images_decode_together_as_alone(vl_engine):
    """No crosstalk: each row's features, rope positions and rope delta are its own."""
    requests = [
        (WITH_IMAGE, [picture(1)]),
        (WITH_IMAGE, [picture(2, (90, 200))]),
        (TEXT_ONLY, []),
        (TWO_IMAGES, [picture(3), picture(4, (300, 300))]),
    ]
    alone = [await run(vl_engine, text, pics) for text, pics in requests]
    steps = vl_engine.stats().num_steps
    together = await asyncio.gather(*(run(vl_engine, text, pics) for text, pics in requests))
    assert together == alone
    assert vl_engine.stats().num_steps - steps < 2 * GREEDY.max_tokens  # one batch, not one by one
    # Rows joining a batch that is already decoding (different widths, deltas spliced in).
    first = asyncio.create_task(run(vl_engine, *requests[3], SamplingParams(max_tokens=40, temperature=0.0)))
    await asyncio.sleep(0.2)
    joined = await asyncio.gather(*(run(vl_engine, text, pics) for text, pics in requests[:3]))
    assert joined == alone[:3]
    assert (await first)[: GREEDY.max_tokens] == alone[3]


async def test_images_that_do_not_sit_on_their_placeholders_are_refused(vl_engine):
    ids, placed = prompt_with(vl_engine, WITH_IMAGE, [picture(1)])
    with pytest.raises(InvalidRequest):
        vl_engine.generate(ids[:-30], GREEDY, images=placed)  # the image runs past the prompt
    with pytest.raises(InvalidRequest):
        vl_engine.generate([ids[0]] + ids, GREEDY, images=placed)  # shifted off its placeholders


async def test_max_image_tokens_lowers_the_budget(vision_model_path: Path):
    from llmhost.engines.transformers.engine import TransformersEngine

    eng = TransformersEngine(
        vision_model_path, model_format="hf", model_name="tiny-vl", max_model_len=256, threads=1, gpu="none",
        max_image_tokens=16,
    )  # fmt: skip
    await eng.start()
    try:
        assert eng.prepare_image(picture(1, (1000, 1000))).num_tokens == 16
        assert eng.prepare_image(picture(1, (150, 100))).num_tokens <= 16
    finally:
        await eng.close()
