"""The tiny Qwen2.5-VL as llama.cpp reads a vision model (tests/models/vision_gguf.py): llama-cpp-python
loads its GGUF and answers text exactly as transformers does on the HF folder, and libmtmd
(`llama_cpp.mtmd_cpp`) loads its mmproj and turns an image into as many tokens as transformers' image
processor does. What the llama.cpp engine needs to serve images is built on these two."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
llama_cpp = pytest.importorskip("llama_cpp")
mtmd_cpp = pytest.importorskip("llama_cpp.mtmd_cpp")

from PIL import Image  # noqa: E402

from tests.models.vision_gguf import write_vision_gguf  # noqa: E402
from tests.models.vision_model import MAX_PIXELS, MIN_PIXELS  # noqa: E402

PROMPT = "<|im_start|>user\nWhat is the capital of France? 12<|im_end|>\n<|im_start|>assistant\n"
# mtmd writes <|vision_start|> and <|vision_end|> around a Qwen2-VL image itself: only its marker goes in.
WITH_IMAGE = "<|im_start|>user\n{marker}What is this?<|im_end|>\n<|im_start|>assistant\n"


def noise(seed: int, size: tuple[int, int]) -> np.ndarray:
    """[height, width, 3] RGB bytes, the same for the same seed."""
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def gguf_files(vision_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_vision_gguf(vision_model_path, tmp_path_factory.mktemp("gguf"))


@pytest.fixture(scope="module")
def llm(gguf_files: tuple[Path, Path]) -> Iterator:
    model = llama_cpp.Llama(str(gguf_files[0]), n_ctx=512, n_threads=1, verbose=False)
    yield model
    model.close()


@pytest.fixture(scope="module")
def mtmd(llm, gguf_files: tuple[Path, Path]) -> Iterator:
    params = mtmd_cpp.mtmd_context_params_default()
    params.use_gpu = False
    params.n_threads = 1
    params.print_timings = False
    params.warmup = False  # a 1288x1288 dummy image otherwise
    # llama.cpp fixes Qwen-VL's budget at 8..4096 tokens per image rather than reading the model's; the
    # HF processor's (min_pixels, max_pixels) / 28² is what transformers uses.
    params.image_min_tokens = MIN_PIXELS // 28**2
    params.image_max_tokens = MAX_PIXELS // 28**2
    ctx = mtmd_cpp.mtmd_init_from_file(str(gguf_files[1]).encode(), llm.model, params)
    assert ctx, "libmtmd could not load the mmproj"
    yield ctx
    mtmd_cpp.mtmd_free(ctx)


def test_the_text_model_answers_as_transformers_does(llm, vision_model_path: Path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    torch.set_num_threads(1)
    ids = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
    tokenizer = AutoTokenizer.from_pretrained(vision_model_path, local_files_only=True)
    assert ids == tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    ours = []
    for token in llm.generate(ids, temp=0.0, top_k=1):
        ours.append(token)
        if len(ours) == 12:
            break
    model = AutoModelForImageTextToText.from_pretrained(vision_model_path, local_files_only=True).eval()
    x = torch.tensor([ids])
    with torch.inference_mode():
        out = model.generate(
            x, attention_mask=torch.ones_like(x), max_new_tokens=12, min_new_tokens=12, do_sample=False
        )
    assert ours == out[0, len(ids) :].tolist()


def _image_chunks(mtmd, pixels: np.ndarray) -> list[tuple[int, int, int]]:
    """(type, tokens, positions) of each chunk mtmd makes of WITH_IMAGE and one image."""
    height, width, _ = pixels.shape
    data = np.ascontiguousarray(pixels)
    bitmap = mtmd_cpp.mtmd_bitmap_init(width, height, data.ctypes.data_as(ctypes.POINTER(ctypes.c_ubyte)))
    text = WITH_IMAGE.format(marker=mtmd_cpp.mtmd_default_marker().decode()).encode()
    chunks = mtmd_cpp.mtmd_input_chunks_init()
    try:
        prompt = mtmd_cpp.mtmd_input_text()
        prompt.text, prompt.text_len, prompt.add_special, prompt.parse_special = text, len(text), False, True
        bitmaps = (mtmd_cpp.mtmd_bitmap_p_ctypes * 1)(bitmap)
        assert mtmd_cpp.mtmd_tokenize(mtmd, chunks, ctypes.byref(prompt), bitmaps, 1) == 0
        out = []
        for i in range(mtmd_cpp.mtmd_input_chunks_size(chunks)):
            chunk = mtmd_cpp.mtmd_input_chunks_get(chunks, i)
            out.append(
                (
                    mtmd_cpp.mtmd_input_chunk_get_type(chunk),
                    mtmd_cpp.mtmd_input_chunk_get_n_tokens(chunk),
                    mtmd_cpp.mtmd_input_chunk_get_n_pos(chunk),
                )
            )
        return out
    finally:
        mtmd_cpp.mtmd_input_chunks_free(chunks)
        mtmd_cpp.mtmd_bitmap_free(bitmap)


# Sizes away from a rounding edge: at one (300x300 here), transformers' float `smart_resize` floors
# 7.9999… to 7 blocks a side where llama.cpp keeps 8, and the two disagree by a row of tokens.
@pytest.mark.parametrize("size", [(150, 100), (400, 250), (40, 90), (1000, 200)])
def test_mtmd_reads_the_mmproj_and_sizes_an_image_as_transformers_does(mtmd, vision_model_path: Path, size):
    from transformers import AutoImageProcessor

    assert mtmd_cpp.mtmd_support_vision(mtmd) and mtmd_cpp.mtmd_decode_use_mrope(mtmd)
    pixels = noise(1, size)
    processor = AutoImageProcessor.from_pretrained(vision_model_path, local_files_only=True)
    grid = processor(images=[Image.fromarray(pixels)], return_tensors="pt")["image_grid_thw"][0].tolist()
    expected_tokens = grid[0] * grid[1] * grid[2] // 4  # one token per 2x2 patches
    text, image, rest = _image_chunks(mtmd, pixels)
    assert (text[0], image[0], rest[0]) == (
        mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_TEXT,
        mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_IMAGE,
        mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_TEXT,
    )
    assert image[1] == expected_tokens
    assert image[2] == max(grid[1], grid[2]) // 2  # M-RoPE: an image advances positions by its longer side


def _answer_after_image(llm, mtmd, pixels: np.ndarray, n: int = 8) -> list[int]:
    """Evaluate WITH_IMAGE and the image (libmtmd's helper), then greedy tokens."""
    height, width, _ = pixels.shape
    data = np.ascontiguousarray(pixels)
    bitmap = mtmd_cpp.mtmd_bitmap_init(width, height, data.ctypes.data_as(ctypes.POINTER(ctypes.c_ubyte)))
    text = WITH_IMAGE.format(marker=mtmd_cpp.mtmd_default_marker().decode()).encode()
    chunks = mtmd_cpp.mtmd_input_chunks_init()
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
    try:
        prompt = mtmd_cpp.mtmd_input_text()
        prompt.text, prompt.text_len, prompt.add_special, prompt.parse_special = text, len(text), False, True
        bitmaps = (mtmd_cpp.mtmd_bitmap_p_ctypes * 1)(bitmap)
        assert mtmd_cpp.mtmd_tokenize(mtmd, chunks, ctypes.byref(prompt), bitmaps, 1) == 0
        n_past = llama_cpp.llama_pos(0)
        assert (
            mtmd_cpp.mtmd_helper_eval_chunks(mtmd, llm.ctx, chunks, 0, 0, 512, True, ctypes.byref(n_past))
            == 0
        )
    finally:
        mtmd_cpp.mtmd_input_chunks_free(chunks)
        mtmd_cpp.mtmd_bitmap_free(bitmap)
    tokens = []
    for _ in range(n):
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
        tokens.append(int(logits.argmax()))
        batch = llama_cpp.llama_batch_get_one((llama_cpp.llama_token * 1)(tokens[-1]), 1)
        assert llama_cpp.llama_decode(llm.ctx, batch) == 0
    return tokens


def test_an_evaluated_image_steers_the_answer(llm, mtmd):
    first = _answer_after_image(llm, mtmd, noise(1, (150, 100)))
    assert first == _answer_after_image(llm, mtmd, noise(1, (150, 100)))
    assert first != _answer_after_image(llm, mtmd, noise(2, (150, 100)))
