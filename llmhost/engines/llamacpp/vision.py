"""Images for the llama.cpp engine, through libmtmd (llama.cpp's multimodal library, which
llama-cpp-python builds and binds as `llama_cpp.mtmd_cpp`). Only this module calls mtmd.

A vision model in GGUF comes as two files: the language model and its `mmproj` (the vision encoder and
the projector into the language model's embeddings), named by `--mmproj` or found beside the model
(`find_mmproj`). The models read here are those whose chat template writes Qwen2-VL's
`<|vision_start|><|image_pad|><|vision_end|>` (Qwen2-VL, Qwen2.5-VL): the pipeline widens the one
`<|image_pad|>` to as many as the image has tokens, and the scheduler decodes the image's embeddings
over that run (libmtmd writes `<|vision_start|>` and `<|vision_end|>` around an image itself; the
prompt has them already, so only its image chunk is used).

- `prepare` (on the pipeline's threads: `mtmd_tokenize` is thread-safe) resizes an image and cuts it
  into patches with libmtmd's own preprocessor, which says how many tokens it becomes (its count, not
  the HF processor's: they differ at rounding edges) and how many positions it advances (M-RoPE: the
  longer side of its token grid). Its slot-record key is made of its pixels' SHA-256 (kv_slots.py).
- `encode` runs the vision encoder on one worker thread of its own, so sequences keep decoding while
  an image is encoded: the encoder is a separate ggml graph on its own backend (llama.cpp's clip
  context), touching nothing of the llama context the engine thread decodes with. One worker, since
  libmtmd keeps one output buffer per context; the embeddings are copied out before the next encode.
- `positions` gives the embeddings' decoder positions (M-RoPE: time, height, width per token).

Qwen-VL's per-image budget: llama.cpp fixes it at 8..4096 tokens whatever the model says, so the
`preprocessor_config.json` beside the model (when there is one: its min/max pixels) and
`--max-image-tokens` are passed to libmtmd. Its warm-up (a dummy 1288x1288 image, 429 MiB of buffers
for Qwen2.5-VL) is off: buffers are sized by the first real image instead.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp as C
import numpy as np
from llama_cpp import mtmd_cpp as M

from llmhost.errors import InvalidRequest, ModelLoadError
from llmhost.types import PromptImage

from .backend import LlamaModel, forward_native_log
from .kv_slots import image_key

log = logging.getLogger("llmhost.llamacpp")

IMAGE_PLACEHOLDER = "<|image_pad|>"  # what a Qwen2-VL chat template writes once per image
# llama.cpp's own lower bound of a Qwen-VL image's tokens (clip.cpp), kept unless a budget asks fewer.
LLAMA_CPP_MIN_IMAGE_TOKENS = 8
# Qwen2-VL's image processor refuses longer sides over 200 times the shorter (`smart_resize`); llama.cpp
# would make such an image a single row of tokens, past the token budget.
MAX_ASPECT_RATIO = 200


def find_mmproj(model_path: str | Path) -> Path | None:
    """The projector beside a model GGUF (`mmproj*.gguf` in its folder, as Hugging Face repositories
    of vision GGUFs ship it); the first by name when there are several."""
    found = sorted(Path(model_path).parent.glob("mmproj*.gguf"))
    return found[0] if found else None


def image_token_limits(model_path: str | Path, max_image_tokens: int | None) -> tuple[int, int]:
    """(min, max) tokens of one image for libmtmd (0: its default): a `preprocessor_config.json` beside
    the model gives the model's own pixel budget; `--max-image-tokens` lowers the maximum."""
    low = high = 0
    config_path = Path(model_path).parent / "preprocessor_config.json"
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text())
            size = config.get("size") or {}
            block = int(config.get("patch_size", 14)) * int(config.get("merge_size", 2))
            low = int(config.get("min_pixels") or size.get("shortest_edge") or 0) // block**2
            high = int(config.get("max_pixels") or size.get("longest_edge") or 0) // block**2
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring %s: %s", config_path, exc)
            low = high = 0
    if max_image_tokens is not None:
        high = min(high, max_image_tokens) if high else max_image_tokens
        low = min(low or LLAMA_CPP_MIN_IMAGE_TOKENS, high)
    return low, high


@dataclass(eq=False)
class MtmdImage:
    """One image as libmtmd prepared it (a `PromptImage`'s data on this engine): its patches live in
    libmtmd's chunk list, freed with this object."""

    key: int  # what slot records hold for each of its tokens (kv_slots.image_key)
    num_positions: int  # positions it advances (M-RoPE: fewer than its tokens)
    chunk: Any  # its mtmd_input_chunk, inside `chunks`
    chunks: Any  # the mtmd_input_chunks that own it


class VisionEncoder:
    """An mmproj loaded with libmtmd for one language model."""

    def __init__(
        self,
        mmproj_path: str | Path,
        model: LlamaModel,
        *,
        n_threads: int,
        use_gpu: bool,
        min_tokens: int = 0,
        max_tokens: int = 0,
    ) -> None:
        self.path = str(mmproj_path)
        if not Path(self.path).is_file():
            raise ModelLoadError(f"mmproj file not found: {self.path}")
        self.image_token_id = _placeholder_id(model)
        M.mtmd_log_set(forward_native_log, ctypes.c_void_p(0))
        params = M.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = n_threads
        params.print_timings = False
        params.warmup = False
        params.image_min_tokens = min_tokens
        params.image_max_tokens = max_tokens
        self.max_tokens = max_tokens  # 0: libmtmd's own
        self.ptr = M.mtmd_init_from_file(self.path.encode(), model.ptr, params)
        if not self.ptr:
            raise ModelLoadError(
                f"libmtmd could not load the mmproj {self.path} (not a projector, or one made for another "
                "model; the log says why)"
            )
        if not M.mtmd_support_vision(self.ptr):
            self.close()
            raise ModelLoadError(f"{self.path} is a projector without a vision encoder (audio only?)")
        self.num_sections = 4 if M.mtmd_decode_use_mrope(self.ptr) else 1  # positions per token
        self.n_embd = C.llama_model_n_embd_inp(model.ptr)
        self._marker = M.mtmd_default_marker()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmhost-vision")

    def close(self) -> None:
        if getattr(self, "_worker", None) is not None:
            self._worker.shutdown(wait=True, cancel_futures=True)
            self._worker = None
        if self.ptr:
            M.mtmd_free(self.ptr)
            self.ptr = None

    def prepare(self, image: Any) -> PromptImage:
        """A decoded RGB image (PIL) as libmtmd reads it: resized to the model's budget, in patches."""
        pixels = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
        height, width, _ = pixels.shape
        if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
            raise InvalidRequest(
                f"the image is {width}x{height} pixels: the model reads aspect ratios up to "
                f"{MAX_ASPECT_RATIO}"
            )
        digest = hashlib.sha256(f"{width}x{height}:".encode() + pixels.tobytes()).digest()
        bitmap = M.mtmd_bitmap_init(width, height, pixels.ctypes.data_as(ctypes.POINTER(ctypes.c_ubyte)))
        if not bitmap:
            raise InvalidRequest("the model cannot read this image (libmtmd refused its size)")
        M.mtmd_bitmap_set_id(bitmap, digest.hex().encode())
        chunks = M.mtmd_input_chunks_init()
        text = M.mtmd_input_text()
        text.text, text.text_len, text.add_special, text.parse_special = (
            self._marker,
            len(self._marker),
            False,
            True,
        )
        try:
            bitmaps = (M.mtmd_bitmap_p_ctypes * 1)(bitmap)
            rc = M.mtmd_tokenize(self.ptr, chunks, ctypes.byref(text), bitmaps, 1)
        finally:
            M.mtmd_bitmap_free(bitmap)
        chunk = _image_chunk(chunks) if rc == 0 else None
        if chunk is None:
            M.mtmd_input_chunks_free(chunks)
            raise InvalidRequest(f"the model cannot read this {width}x{height} image (libmtmd: error {rc})")
        num_tokens = int(M.mtmd_input_chunk_get_n_tokens(chunk))
        num_positions = int(M.mtmd_input_chunk_get_n_pos(chunk))
        if self.max_tokens and num_tokens > self.max_tokens:  # a thin strip keeps a row of tokens
            M.mtmd_input_chunks_free(chunks)
            raise InvalidRequest(
                f"the {width}x{height} image would be {num_tokens} tokens, more than the {self.max_tokens} "
                "one image may take (--max-image-tokens or the model's budget): its shape is too narrow"
            )
        prepared = MtmdImage(image_key(digest, num_tokens, num_positions), num_positions, chunk, chunks)
        weakref.finalize(prepared, M.mtmd_input_chunks_free, chunks)
        return PromptImage(num_tokens, prepared)

    def encode(self, image: MtmdImage, num_tokens: int) -> Future[np.ndarray]:
        """The image's embeddings ([tokens, n_embd] float32), computed on the encoder thread."""
        assert self._worker is not None, "the vision encoder is closed"
        return self._worker.submit(self._encode, image, num_tokens)

    def _encode(self, image: MtmdImage, num_tokens: int) -> np.ndarray:
        rc = M.mtmd_encode_chunk(self.ptr, image.chunk)
        if rc != 0:
            raise RuntimeError(f"the vision encoder failed on an image (libmtmd: error {rc})")
        out = ctypes.cast(M.mtmd_get_output_embd(self.ptr), ctypes.POINTER(ctypes.c_float))
        rows = np.ctypeslib.as_array(out, (num_tokens, self.n_embd))
        return rows.copy()  # the next encode overwrites libmtmd's buffer

    def positions(self, image: MtmdImage, num_tokens: int, first: int) -> np.ndarray:
        """[sections, tokens] int32 decoder positions of the image's embeddings, starting at `first`."""
        tokens = M.mtmd_input_chunk_get_tokens_image(image.chunk)
        out = (M.mtmd_decoder_pos * num_tokens)()
        M.mtmd_helper_image_get_decoder_pos(tokens, first, out)
        raw = np.ctypeslib.as_array(ctypes.cast(out, ctypes.POINTER(ctypes.c_uint32)), (num_tokens, 4))
        # mtmd_decoder_pos is (t, x, y, z); llama.cpp's sections are time, height (y), width (x), extra.
        return np.ascontiguousarray(raw[:, [0, 2, 1, 3]].T[: self.num_sections], dtype=np.int32)


def _placeholder_id(model: LlamaModel) -> int:
    """The id of Qwen2-VL's image placeholder, which the chat template must write."""
    ids = model.tokenize(IMAGE_PLACEHOLDER, add_special=False)
    template = model.meta("tokenizer.chat_template") or ""
    if len(ids) != 1 or IMAGE_PLACEHOLDER not in template:
        raise ModelLoadError(
            f"the llama.cpp engine reads images for models whose chat template places {IMAGE_PLACEHOLDER} "
            "(Qwen2-VL, Qwen2.5-VL); this model's does not"
        )
    return ids[0]


def _image_chunk(chunks: Any) -> Any:
    for i in range(M.mtmd_input_chunks_size(chunks)):
        chunk = M.mtmd_input_chunks_get(chunks, i)
        if M.mtmd_input_chunk_get_type(chunk) == M.MTMD_INPUT_CHUNK_TYPE_IMAGE:
            return chunk
    return None
