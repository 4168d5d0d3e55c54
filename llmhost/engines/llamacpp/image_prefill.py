"""Prompts with images in the llama.cpp scheduler: each image encoded off the engine thread, its
embeddings decoded into the sequence's cells, and the text around it at the right positions.

llama_decode takes a batch of tokens or one of embeddings, never both, so a step may run more than one:
first the images whose embeddings are ready (one sequence's image in its own batch, in pieces of at most
`n_batch` rows; images up to `n_batch` tokens a step, at least one), then the usual token batch, in
which sequences past their images decode and others prefill. An image is decoded whole within one step,
so a slot's record never holds part of one (kv_slots.py). While the vision encoder works on an image
(`VisionEncoder.encode`, on its own thread), its sequence waits at the image and everything else keeps
decoding; when nothing else has work, the engine thread sleeps until an encode finishes.

Positions: with M-RoPE an image's tokens take one position each for time (and their row and column for
height and width) and the text after it goes on `num_positions` further, so a sequence's text at
record index i sits at `kv_slots.position_at(prompt, i)`, not at i.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence as Seq
from typing import TYPE_CHECKING, Any

from llmhost.errors import EngineError
from llmhost.types import PromptImage

from .backend import Batch, LlamaContext
from .kv_slots import position_at
from .vision import VisionEncoder

if TYPE_CHECKING:
    from .sequence import Sequence


def keyed_prompt(prompt: list[int], images: Seq[PromptImage]) -> list[int]:
    """`prompt` as slots record it: each image's placeholders replaced by its key (kv_slots.image_key)."""
    out = list(prompt)
    for image in images:
        out[image.offset : image.offset + image.num_tokens] = [image.data.key] * image.num_tokens
    return out


def positions_saved(images: Seq[PromptImage]) -> int:
    """How many fewer positions than tokens the images take (0 without M-RoPE)."""
    return sum(image.num_tokens - image.data.num_positions for image in images)


class ImagePrefill:
    def __init__(self, ctx: LlamaContext, vision: VisionEncoder, wake: threading.Event) -> None:
        self._ctx = ctx
        self._vision = vision
        self._wake = wake
        self._budget = ctx.config.n_batch  # image tokens decoded in one step (at least one image)

    def advance(self, running: Seq[Sequence]) -> tuple[bool, list[tuple[Sequence, Exception]]]:
        """Start encoding each image a sequence has reached, and decode those already encoded. Returns
        whether any image was decoded, and the sequences whose image could not be encoded."""
        num_decoded = 0
        failed: list[tuple[Sequence, Exception]] = []
        for seq in running:
            image = self._next_image(seq)
            if image is None:
                continue
            if seq.encoding is None:
                seq.encoding = self._vision.encode(image.data, image.num_tokens)
                seq.encoding.add_done_callback(self._wake_up)
                continue
            if not seq.encoding.done() or num_decoded >= self._budget:
                continue
            encoding, seq.encoding = seq.encoding, None
            try:
                rows = encoding.result()
            except Exception as exc:  # the encoder failed on this image: only its sequence fails
                failed.append((seq, EngineError(f"the image could not be read: {exc}")))
                continue
            self._decode(seq, image, rows)
            num_decoded += image.num_tokens
        return num_decoded > 0, failed

    def fill(self, running: Seq[Sequence], batch: Batch, sample_at: list[tuple[Sequence, int]]) -> int:
        """Add the prompt text of sequences with images to the token batch, up to each one's next image;
        returns how many sequences got some."""
        num_filled = 0
        for seq in running:
            if not seq.images or seq.is_prefilled or seq.leader is not None or batch.room == 0:
                continue
            assert seq.slot is not None
            start = seq.num_cached
            end = min(_text_end(seq, start), start + batch.room)
            if end == start:  # at an image
                continue
            shift = start - position_at(seq.prompt, start)  # no image between start and end
            last = len(seq.prompt) - 1
            for i in range(start, end):
                index = batch.add(seq.prompt[i], i - shift, seq.slot.index, i == last)
            seq.slot.tokens.extend(seq.prompt[start:end])
            if seq.is_prefilled:
                sample_at.append((seq, index))
            num_filled += 1
        return num_filled

    def wait(self, running: Seq[Sequence]) -> None:
        """Nothing to decode: sleep until an encode finishes (or a request arrives or leaves)."""
        self._wake.clear()
        if not any(s.encoding is not None and s.encoding.done() for s in running):
            self._wake.wait(timeout=1.0)

    def _next_image(self, seq: Sequence) -> PromptImage | None:
        """The image `seq` has reached in its prompt, if it computes it itself (a follower copies)."""
        if not seq.images or seq.leader is not None or seq.slot is None or seq.is_prefilled:
            return None
        return next((image for image in seq.images if image.offset == seq.num_cached), None)

    def _decode(self, seq: Sequence, image: PromptImage, rows: Any) -> None:
        assert seq.slot is not None
        first = position_at(seq.prompt, image.offset)
        positions = self._vision.positions(image.data, image.num_tokens, first)
        step = self._budget
        for start in range(0, image.num_tokens, step):
            rc = self._ctx.decode_embeddings(
                rows[start : start + step], positions[:, start : start + step], seq.slot.index
            )
            if rc != 0:
                raise EngineError(f"llama_decode returned {rc} on an image")
        seq.slot.tokens.extend(seq.prompt[image.offset : image.offset + image.num_tokens])

    def _wake_up(self, _done: object) -> None:
        self._wake.set()


def _text_end(seq: Sequence, start: int) -> int:
    """Where the prompt text from `start` ends: at the next image, or the prompt's end."""
    return min((image.offset for image in seq.images if image.offset >= start), default=len(seq.prompt))
