"""Images on the llama.cpp engine: the tiny Qwen2.5-VL as a GGUF and its mmproj (tests/models/
vision_gguf.py), loaded through libmtmd. Greedy output with an image equals the transformers engine's
on the HF folder (whose output equals transformers' own generate); images change the answer; sequences
with different images, and text-only ones, decode together as each alone; a repeated image reuses its
cells and another image does not, from a slot or from host RAM."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("llama_cpp.mtmd_cpp")

from PIL import Image  # noqa: E402

from llmhost.errors import InvalidRequest, ModelLoadError  # noqa: E402
from llmhost.media import ImagePart  # noqa: E402
from llmhost.pipeline.image_prompts import place_images  # noqa: E402
from llmhost.types import SamplingParams, TokenLogprob  # noqa: E402
from tests.engines import test_transformers_vision as transformers_tests  # noqa: E402
from tests.engines.test_prefix_cache import Answer  # noqa: E402
from tests.greedy import assert_greedy_close  # noqa: E402

IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
WITH_IMAGE = f"{SYSTEM}<|im_start|>user\n{IMAGE}What is this?<|im_end|>\n<|im_start|>assistant\n"
TWO_IMAGES = f"{SYSTEM}<|im_start|>user\n{IMAGE}and{IMAGE}Which is larger?<|im_end|>\n<|im_start|>assistant\n"
TEXT_ONLY = f"{SYSTEM}<|im_start|>user\nWhat is this?<|im_end|>\n<|im_start|>assistant\n"
GREEDY = SamplingParams(max_tokens=10, temperature=0.0, logprobs=5)


def picture(seed: int, size: tuple[int, int] = (150, 100)) -> Image.Image:
    """A noisy picture (a flat one gives every patch the same features), the same for the same seed."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def prompt_with(engine, text: str, images: list[Image.Image]):
    ids = engine.tokenize(text)
    prepared = [engine.prepare_image(i) for i in images]
    parts = [ImagePart("data:", f"messages[0].content[{i}]") for i in range(len(images))]
    return place_images(ids, prepared, engine.info().image_token_id, parts)


async def run(engine, text: str, images: list[Image.Image], params: SamplingParams = GREEDY) -> Answer:
    ids, placed = prompt_with(engine, text, images)
    tokens: list[int] = []
    logprobs: list[TokenLogprob] = []
    usage = None
    async for delta in engine.generate(ids, params, images=placed):
        tokens += delta.token_ids
        logprobs += delta.logprobs or []
        usage = delta.usage or usage
    return Answer(tokens, logprobs, usage)


async def _engine(folder: Path, **options):
    from llmhost.engines.llamacpp.engine import LlamaCppEngine

    settings = {"max_model_len": 1024, "max_num_seqs": 4, "threads": 1, "batch_tokens": 32, **options}
    eng = LlamaCppEngine(str(_model_file(folder)), model_name="tiny-vl", discover_mmproj=True, **settings)
    await eng.start()
    return eng


def _model_file(folder: Path) -> Path:
    return next(p for p in folder.glob("*.gguf") if not p.name.startswith("mmproj"))


# The transformers engine on the HF folder the GGUF was made from: the reference answers.
vl_engine = transformers_tests.vl_engine


# Batches of 32 tokens: a 64-token image decodes in two pieces and prompts prefill in several chunks.
@pytest.fixture(scope="module")
async def gguf_engine(vision_gguf_dir: Path):
    eng = await _engine(vision_gguf_dir)
    yield eng
    await eng.close()


@pytest.fixture(scope="module")
async def reproducible_gguf_engine(vision_gguf_dir: Path):
    """Prefix caching off: per-sequence KV streams, bit-identical answers whatever else runs."""
    eng = await _engine(vision_gguf_dir, prefix_caching=False)
    yield eng
    await eng.close()


async def test_info_says_it_takes_images(gguf_engine):
    info = gguf_engine.info()
    assert info.accepts_images and info.image_token_id == gguf_engine.tokenize("<|image_pad|>")[0]
    assert IMAGE in info.chat_template


async def test_an_image_becomes_the_tokens_libmtmd_makes_of_it(gguf_engine):
    """The budget comes from preprocessor_config.json beside the model: 56x56 to 224x224 pixels."""
    assert gguf_engine.prepare_image(picture(1, (150, 100))).num_tokens == 4 * 5  # resized to 112 x 140
    assert gguf_engine.prepare_image(picture(1, (1000, 1000))).num_tokens == 64  # the 224 x 224 budget
    assert gguf_engine.prepare_image(picture(1, (10, 10))).num_tokens == 4  # at least 56 x 56
    with pytest.raises(InvalidRequest, match="aspect ratio"):
        gguf_engine.prepare_image(picture(1, (4000, 10)))


# Sizes the two image processors keep as they are (multiples of 28 within the budget): their resizing
# filters differ (llama.cpp's bicubic is not PIL's), which moves a random model's answer.
@pytest.mark.parametrize(
    "text,sizes",
    [(WITH_IMAGE, [(112, 140)]), (WITH_IMAGE, [(224, 224)]), (TWO_IMAGES, [(84, 56), (140, 112)])],
    ids=["5x4 tokens", "8x8 tokens", "two images"],
)
async def test_greedy_equals_the_transformers_engine(gguf_engine, vl_engine, text, sizes):
    """libmtmd's encoder, the image's M-RoPE positions and the text after it, as transformers has them."""
    pictures = [picture(i + 1, size) for i, size in enumerate(sizes)]
    params = SamplingParams(max_tokens=12, temperature=0.0, logprobs=5)
    expected = await run(vl_engine, text, pictures, params)
    mine = await run(gguf_engine, text, pictures, params)
    # The two encoders agree to ~0.3% (float sums in another order), so a near-tie may go either way.
    assert mine.tokens[:4] == expected.tokens[:4]
    assert_greedy_close(expected.run, mine.run, "llama.cpp against transformers")


async def test_the_image_changes_the_answer(gguf_engine):
    answers = [
        await run(gguf_engine, WITH_IMAGE, [picture(1)]),
        await run(gguf_engine, WITH_IMAGE, [picture(2)]),
    ]
    answers.append(await run(gguf_engine, TEXT_ONLY, []))
    assert len({tuple(a.tokens) for a in answers}) == 3


REQUESTS = [
    (WITH_IMAGE, [picture(1)]),
    (WITH_IMAGE, [picture(2, (90, 200))]),
    (TEXT_ONLY, []),
    (TWO_IMAGES, [picture(3), picture(4, (300, 300))]),
]


async def test_images_decoded_together_answer_as_each_alone(reproducible_gguf_engine):
    """No crosstalk: each sequence's image lands in its own cells at its own positions. Per-sequence
    streams make the answers bit-identical whatever else runs."""
    eng = reproducible_gguf_engine
    alone = [(await run(eng, text, pics)).tokens for text, pics in REQUESTS]
    together = await asyncio.gather(*(run(eng, text, pics) for text, pics in REQUESTS))
    assert [a.tokens for a in together] == alone
    # Sequences joining while others decode, their images encoded meanwhile.
    first = asyncio.create_task(run(eng, *REQUESTS[3], SamplingParams(max_tokens=40, temperature=0.0)))
    await asyncio.sleep(0.05)
    joined = await asyncio.gather(*(run(eng, text, pics) for text, pics in REQUESTS[:3]))
    assert [a.tokens for a in joined] == alone[:3]
    assert (await first).tokens[: GREEDY.max_tokens] == alone[3]


async def test_images_decoded_together_in_the_shared_pool_answer_as_alone(gguf_engine):
    """The same with prefix caching (one KV pool): equal up to rounding at a near-tie (tests/greedy.py)."""
    alone = [await run(gguf_engine, text, pics) for text, pics in REQUESTS]
    together = await asyncio.gather(*(run(gguf_engine, text, pics) for text, pics in REQUESTS))
    for i, (a, b) in enumerate(zip(alone, together, strict=True)):
        assert_greedy_close(a.run, b.run, f"request {i}")


async def test_text_sequences_next_to_image_ones_are_undisturbed(gguf_engine):
    """A long text-only answer while sequences with images come, are encoded, decode and go."""
    story = SamplingParams(max_tokens=48, temperature=0.0, logprobs=5, ignore_eos=True)
    text = f"{SYSTEM}<|im_start|>user\nTell me a long story.<|im_end|>\n<|im_start|>assistant\n"
    solo = await run(gguf_engine, text, [], story)
    beside = asyncio.create_task(run(gguf_engine, text, [], story))
    for seed in range(5, 9):
        await run(gguf_engine, WITH_IMAGE, [picture(seed, (224, 224))])
    assert_greedy_close(solo.run, (await beside).run, "the text sequence")


async def test_a_repeated_image_reuses_its_cells_and_another_does_not(gguf_engine):
    text = WITH_IMAGE.replace("What is this?", "Describe the colours in detail.")
    first = await run(gguf_engine, text, [picture(11)])
    ids, [image] = prompt_with(gguf_engine, text, [picture(11)])
    again = await run(gguf_engine, text, [picture(11)])
    assert again.usage is not None and again.usage.cached_tokens >= image.offset + image.num_tokens
    assert_greedy_close(first.run, again.run, "the repeated request")
    other = await run(gguf_engine, text, [picture(12)])
    assert other.usage is not None and 0 < other.usage.cached_tokens <= image.offset  # the text before it
    assert other.tokens != first.tokens


async def test_identical_images_arriving_together_are_computed_once(gguf_engine):
    """The second waits for the first's prompt, image included, and copies its cells."""
    text = WITH_IMAGE.replace("What is this?", "Count the dots.")
    a, b = await asyncio.gather(run(gguf_engine, text, [picture(21)]), run(gguf_engine, text, [picture(21)]))
    assert a.tokens == b.tokens
    _, [image] = prompt_with(gguf_engine, text, [picture(21)])
    assert max(a.usage.cached_tokens, b.usage.cached_tokens) >= image.offset + image.num_tokens


async def test_an_evicted_image_prefix_comes_back_from_host_ram(vision_gguf_dir: Path):
    """One slot: another prompt overwrites the image's cells, which are saved to host RAM first and
    restored (their positions as they were) when the image comes again."""
    eng = await _engine(vision_gguf_dir, max_num_seqs=1, prefix_cache_ram_bytes=64 * 2**20)
    try:
        big = picture(31, (224, 224))  # 64 tokens: enough to be worth saving
        first = await run(eng, WITH_IMAGE, [big])
        await run(eng, TEXT_ONLY.replace("What", "Who"), [])
        again = await run(eng, WITH_IMAGE, [big])
        assert eng.stats().prefix_cache_ram_restores == 1
        assert again.usage is not None and again.usage.cached_tokens > 64
        assert_greedy_close(first.run, again.run, "the restored prefix")
    finally:
        await eng.close()


async def test_prompt_logprobs_with_an_image_are_refused(gguf_engine):
    ids, placed = prompt_with(gguf_engine, WITH_IMAGE, [picture(1)])
    with pytest.raises(InvalidRequest, match="prompt_logprobs"):
        gguf_engine.generate(ids, SamplingParams(max_tokens=1, prompt_logprobs=1), images=placed)


def test_a_folder_serves_the_model_beside_its_projector(vision_gguf_dir: Path):
    from llmhost.engines.llamacpp.vision import find_mmproj
    from llmhost.models.source import resolve_model

    source = resolve_model(str(vision_gguf_dir))
    assert source.path == _model_file(vision_gguf_dir)
    assert find_mmproj(source.path).name.startswith("mmproj-")


async def test_a_projector_that_is_not_one(vision_gguf_dir: Path, tmp_path: Path):
    """Named with --mmproj: a load error. Found beside the model: a warning, and the model reads text."""
    from llmhost.engines.llamacpp.engine import LlamaCppEngine

    model = tmp_path / "model.gguf"
    shutil.copy(_model_file(vision_gguf_dir), model)
    named = LlamaCppEngine(str(model), model_name="m", max_num_seqs=1, threads=1, mmproj_path=str(model))
    with pytest.raises(ModelLoadError, match="mmproj"):
        await named.start()
    await named.close()
    shutil.copy(model, tmp_path / "mmproj-broken.gguf")
    found = await _engine(tmp_path)
    try:
        assert not found.info().accepts_images
        with pytest.raises(InvalidRequest, match="text only"):
            found.prepare_image(picture(1))
    finally:
        await found.close()
