"""The running batch: one left-padded KV cache shared by every sequence being decoded.

Rows are spliced, not recomputed: new sequences are prefilled together into a cache of their own and
then joined to the running cache (the shorter side is left-padded), finished rows are cut out, and
columns that became padding in every row are trimmed. Each row's real tokens are therefore always a
contiguous run at the right end, its attention mask is 0 over the padding, and its position ids
count only its own tokens, so a sequence decodes exactly as it would alone.

A vision model's rows with images are prefilled from embeddings (their images' features written in,
`vision.py`) with 3-D M-RoPE positions; each row keeps its own rope delta, which every later position
of that row adds (0 for text rows), so rows with different images decode side by side.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from llmhost.types import PromptImage

if TYPE_CHECKING:
    from .vision import VisionModel


class PaddedBatch:
    def __init__(
        self, model: Any, pad_token_id: int, device: torch.device, vision: VisionModel | None = None
    ) -> None:
        self._model = model
        self._pad = pad_token_id
        self._device = device
        self._vision = vision
        self.cache: Any = None  # transformers DynamicCache over all rows
        self.mask: torch.Tensor | None = None  # [rows, columns] 1 = real token
        self.rope_deltas: torch.Tensor | None = None  # [rows, 1]: what each row adds to its positions

    @property
    def num_rows(self) -> int:
        return 0 if self.mask is None else self.mask.shape[0]

    def prefill(
        self, prompts: Sequence[Sequence[int]], images: Sequence[tuple[PromptImage, ...]] | None = None
    ) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the prompts (with their images, if any) as one left-padded batch; returns (cache, mask,
        rope deltas, last-position logits)."""
        from transformers import DynamicCache

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
        ids, mask = ids.to(self._device), mask.to(self._device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        deltas = torch.zeros((len(prompts), 1), dtype=torch.long, device=self._device)
        inputs: dict[str, Any] = {"input_ids": ids}
        if images is not None and any(images):
            inputs, positions = self._with_images(ids, mask, positions, images, deltas)
        cache = DynamicCache(config=self._model.config)
        out = self._model(
            **inputs,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.past_key_values, mask, deltas, out.logits[:, -1, :]

    def prefill_after(
        self, prefix: Sequence[tuple[torch.Tensor, torch.Tensor]], suffix: Sequence[int]
    ) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run one text prompt whose first tokens' KV is `prefix` (per layer: keys and values, [1, heads,
        length, dim], from `row_kv`): only `suffix` is computed. Returns what `prefill` returns."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self._model.config)
        for layer, (keys, values) in enumerate(prefix):
            cache.update(keys.to(self._device), values.to(self._device), layer)
        start = prefix[0][0].shape[2]
        ids = torch.tensor([list(suffix)], dtype=torch.long, device=self._device)
        mask = torch.ones((1, start + len(suffix)), dtype=torch.long, device=self._device)
        positions = torch.arange(start, start + len(suffix), device=self._device)[None]
        out = self._model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        deltas = torch.zeros((1, 1), dtype=torch.long, device=self._device)
        return out.past_key_values, mask, deltas, out.logits[:, -1, :]

    def row_length(self, row: int) -> int:
        """How many tokens `row` holds (its KV, without padding)."""
        assert self.mask is not None
        return int(self.mask[row].sum())

    def row_kv(self, row: int, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A copy of the KV of `row`'s first `length` tokens, on the CPU (for `prefill_after` later), in
        pages of its own (`copy_to_own_pages`)."""
        assert self.mask is not None
        start = self.mask.shape[1] - self.row_length(row)  # the row's tokens: a run at the right end
        rows = [
            t[row : row + 1, :, start : start + length]
            for layer in self.cache.layers
            for t in (layer.keys, layer.values)
        ]
        copies = copy_to_own_pages(rows)
        return list(zip(copies[0::2], copies[1::2], strict=True))

    def _with_images(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        images: Sequence[tuple[PromptImage, ...]],
        deltas: torch.Tensor,
    ) -> tuple[dict[str, Any], torch.Tensor]:
        """Embeddings with the image rows' features written in, and [3, rows, columns] positions (text
        rows: their 1-D positions thrice); fills `deltas` for the image rows."""
        assert self._vision is not None
        embeds = self._model.get_input_embeddings()(ids)
        positions = positions[None].repeat(3, 1, 1)
        for row, row_images in enumerate(images):
            if not row_images:
                continue
            start = int(ids.shape[1] - mask[row].sum())  # the row's real tokens: a run at the right end
            own = ids[row, start:]
            embeds[row, start:] = self._vision.embed_prompt(own, row_images)
            positions[:, row, start:], deltas[row, 0] = self._vision.rope_positions(own, row_images)
        return {"inputs_embeds": embeds}, positions

    def join(self, cache: Any, mask: torch.Tensor, deltas: torch.Tensor) -> None:
        """Append prefilled rows (from `prefill`) below the running ones."""
        if self.mask is None:
            self.cache, self.mask, self.rope_deltas = cache, mask, deltas
            return
        assert self.rope_deltas is not None
        self.rope_deltas = torch.cat([self.rope_deltas, deltas])
        width = max(self.mask.shape[1], mask.shape[1])
        old_pad, new_pad = width - self.mask.shape[1], width - mask.shape[1]
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_left_pad(old.keys, old_pad), _left_pad(new.keys, new_pad)], dim=0)
            old.values = torch.cat([_left_pad(old.values, old_pad), _left_pad(new.values, new_pad)], dim=0)
        self.mask = torch.cat(
            [torch.nn.functional.pad(self.mask, (old_pad, 0)), torch.nn.functional.pad(mask, (new_pad, 0))]
        )

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only these rows (in this order), then drop columns that are padding in every row."""
        if not rows:
            self.cache, self.mask, self.rope_deltas = None, None, None
            return
        assert self.mask is not None and self.rope_deltas is not None
        if len(rows) != self.num_rows or list(rows) != list(range(self.num_rows)):
            index = torch.tensor(list(rows), dtype=torch.long, device=self.mask.device)
            self.mask = self.mask.index_select(0, index)
            self.rope_deltas = self.rope_deltas.index_select(0, index)
            for layer in self.cache.layers:
                layer.keys = layer.keys.index_select(0, index)
                layer.values = layer.values.index_select(0, index)
        first = int(self.mask.any(dim=0).int().argmax())
        if first > 0:
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                layer.keys = layer.keys[:, :, first:, :]
                layer.values = layer.values[:, :, first:, :]

    def decode(self, tokens: Sequence[int]) -> torch.Tensor:
        """One step: feed each row its next token; returns the logits of the new position, [rows, vocab]."""
        assert self.mask is not None and self.rope_deltas is not None and len(tokens) == self.num_rows
        ids = torch.tensor(tokens, dtype=torch.long, device=self._device).unsqueeze(1)
        positions = self.mask.sum(dim=1, keepdim=True) + self.rope_deltas
        self.mask = torch.nn.functional.pad(self.mask, (0, 1), value=1)
        out = self._model(
            input_ids=ids,
            attention_mask=self.mask,
            position_ids=positions,
            past_key_values=self.cache,
            use_cache=True,
        )
        self.cache = out.past_key_values
        return out.logits[:, -1, :]


def _left_pad(kv: torch.Tensor, columns: int) -> torch.Tensor:
    """[rows, heads, length, dim] -> zeros on the left of `length`."""
    return torch.nn.functional.pad(kv, (0, 0, columns, 0)) if columns else kv


def copy_to_own_pages(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """CPU copies of `tensors`, all in one anonymous mmap that goes back to the OS once the last copy
    is dropped.

    The prefix store keeps and evicts such copies all the time: from the heap, glibc served them from
    arenas that fragmented, and a 3-minute mixed load ended with RSS 2.5x its idle size beyond the
    store's own bytes (1.45x without the store)."""
    sizes = [t.numel() * t.element_size() for t in tensors]
    pages = mmap.mmap(-1, max(sum(sizes), 1))
    copies, offset = [], 0
    for tensor, size in zip(tensors, sizes, strict=True):
        # Each view holds a reference to `pages`, which stays mapped while any of them lives.
        if size == 0:  # frombuffer refuses an empty view
            copies.append(torch.empty(tensor.shape, dtype=tensor.dtype))
            continue
        view = torch.frombuffer(pages, dtype=tensor.dtype, count=tensor.numel(), offset=offset)
        copies.append(view.view(tensor.shape).copy_(tensor))
        offset += size
    return copies
