"""One generation request as the llama.cpp scheduler tracks it: its KV slot, sampler chain, the
prefilling sequence it follows, its images and its prompt scores."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from llmhost.engines.threaded import GenerationState
from llmhost.types import PromptImage, TokenLogprob

from .image_prefill import keyed_prompt, positions_saved
from .kv_slots import KvSlot
from .sampler import SequenceSampler


@dataclass(eq=False)
class Sequence(GenerationState):
    """One generation request as the llama.cpp scheduler sees it: its KV slot and sampler chain too."""

    slot: KvSlot | None = None
    sampler: SequenceSampler | None = None
    # A prefilling sequence whose prompt shares `follow_len` leading tokens with this one: this one
    # computes nothing until that prefix is in the cache, then copies it.
    leader: Sequence | None = None
    follow_len: int = 0
    # A prompt with images: the images at their offsets (vision.MtmdImage data). `prompt` then holds
    # each image's key where its placeholders were (what the slot records), `positions_saved` how many
    # fewer positions than tokens the images take, and `encoding` the next image's embeddings while the
    # vision encoder computes them.
    images: tuple[PromptImage, ...] = ()
    positions_saved: int = 0
    encoding: Future[Any] | None = None
    # With `params.prompt_logprobs`: the scores of the prompt positions computed so far (the first
    # token's is None), handed to the first delta.
    prompt_scores: list[TokenLogprob | None] | None = None

    @property
    def scores_prompt(self) -> bool:
        return self.params.prompt_logprobs is not None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.images:
            self.prompt = keyed_prompt(self.prompt, self.images)
            self.positions_saved = positions_saved(self.images)

    @property
    def next_position(self) -> int:
        """The position of the token fed next once the prompt is in (every image behind it)."""
        return self.num_cached - self.positions_saved

    @property
    def num_cached(self) -> int:
        """Tokens of this sequence (prompt, then fed outputs) whose KV is in its slot."""
        return len(self.slot.tokens) if self.slot is not None else 0

    @property
    def is_prefilled(self) -> bool:
        return self.num_cached >= len(self.prompt)


def slot_index(seq: Sequence) -> int:
    """Where a running sequence sorts: by its slot (the scheduler keeps them in slot order)."""
    return seq.slot.index if seq.slot is not None else -1
