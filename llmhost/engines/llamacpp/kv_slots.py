"""Which tokens each KV slot of the llama.cpp context holds, which slot a new sequence takes, and where a
new prompt's prefix already is.

Every slot is a sequence id with a KV stream of its own (backend.LlamaContext says why not one pool). A
slot keeps its tokens after its request ends (an idle slot), so the next request that starts the same way
(the same rubric or system prompt, the same conversation one turn later, the same transcript of an agent
loop) reuses those cells instead of computing them again: in place when it takes that slot, as a copy of
the rows into its own stream otherwise (milliseconds against seconds of prefill). An idle slot's cells
cost nothing while other streams decode; they are dropped only when a new sequence needs the slot.

With `--kv-unified` (or while the automatic layout has it: kv_layout.py) the context's KV cache is one
pool of cells instead, each tagged with the sequence ids
(slots) that use it: copying a prefix to another slot (`llama_memory_seq_cp` inside the pool) only tags
its cells with one more id, so a prefix shared by many sequences is stored and computed once. But
attention then scans the pool's whole used range for every query (masked cells are computed too), so
idle cells slow every decode step: measured here, 8 sequences decoded 169 tok/s with an empty pool, 124
with 8,000 idle cells, 60 with 32,000. In the pool, cells that only idle slots hold are kept up to as
many as the running sequences hold (at least `MIN_IDLE_BUDGET_TOKENS`); past that the least recently
used idle slots are emptied, but only once they have been idle for `IDLE_GRACE_S`, so an agent loop or an
RL rollout that sends its next turn right after the tool ran still finds its whole transcript.

Which slot: with streams llama.cpp runs one forward pass per run of consecutive sequence ids in a
batch, so the running slots must stay one run. A new sequence takes a free slot that keeps them so (a gap
inside the run, else next to it; any slot when nothing runs): the idle slot whose whole content its
prompt starts with if there is one (nothing is lost), else an empty one, else the least recently used.
When a sequence in the middle ends and no new one fills its place, the scheduler moves an end of the run
into the gap (`gap_to_fill`). In the pool any free slot will do.

Images (a vision model, `vision.py`): a prompt's image is a run of identical placeholder ids, so a slot
records each image's run as its key instead (`image_key`: negative, so no vocabulary id, and made of
the image's SHA-256): two prompts share cells up to an image only when it is the same picture, and a
different one ends the match where it starts. An image is decoded whole in one step, so a record never
holds part of one and a match never ends inside one. With M-RoPE (Qwen2-VL) an image's tokens share one
position and the text after it goes on `n_pos` further (the longer side of its grid), not one per token:
positions and record indices part after the first image, and `position_at` gives the position that
llama.cpp's cell operations (`seq_rm`, `seq_cp` from/up to a position) need. The key carries the image's
token and position counts, so the record alone says where every cell sits.

Pure Python (no llama.cpp calls): the scheduler applies what this table decides to the context.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from llmhost.engines.host_prefix_cache import common_prefix_len

_KEY_FIELD_BITS = 24  # an image's token count and its position count, each below 2**24


def image_key(digest: bytes, num_tokens: int, num_positions: int) -> int:
    """What a slot records for each placeholder of one image: negative (no token id is), the same for
    the same picture (its content's `digest`), and carrying its tokens and positions (`position_at`)."""
    fields = (int.from_bytes(digest, "big") << 2 * _KEY_FIELD_BITS) | num_tokens << _KEY_FIELD_BITS
    return -(fields | num_positions) - 1


def _image_counts(key: int) -> tuple[int, int]:
    """(tokens, positions) of the image an `image_key` stands for."""
    fields = -key - 1
    mask = (1 << _KEY_FIELD_BITS) - 1
    return fields >> _KEY_FIELD_BITS & mask, fields & mask


def position_at(tokens: Sequence[int], index: int) -> int:
    """The position of the cell `tokens[index]` takes (of the next token, at the end): `index` when no
    image comes before it; each image before it counts its positions rather than its tokens."""
    if index == 0 or min(tokens[:index]) >= 0:  # no image key: one position per token (min runs in C)
        return index
    position = i = 0
    while i < index:
        if tokens[i] >= 0:
            position += 1
            i += 1
            continue
        num_tokens, num_positions = _image_counts(tokens[i])
        if index < i + num_tokens:  # inside the image: its tokens share its first position
            return position
        position += num_positions
        i += num_tokens
    return position


MIN_IDLE_BUDGET_TOKENS = 512
IDLE_GRACE_S = 2.0


@dataclass(eq=False)
class KvSlot:
    index: int  # the sequence id in the llama.cpp context
    tokens: list[int] = field(default_factory=list)  # tokens[p] is the token whose KV sits at position p
    is_busy: bool = False  # a running sequence owns it
    last_used: int = 0  # when it was last released (a tick of the table)
    released_at_s: float = 0.0  # time.monotonic() of that release


class KvSlotTable:
    def __init__(self, num_slots: int, *, reuse_prefixes: bool, keeps_one_run: bool = True) -> None:
        self.slots = [KvSlot(i) for i in range(num_slots)]
        self.reuse_prefixes = reuse_prefixes
        self.keeps_one_run = keeps_one_run  # per-sequence streams: the busy slots stay consecutive
        self._ticks = itertools.count(1)

    @property
    def num_free(self) -> int:
        return sum(not s.is_busy for s in self.slots)

    def best_source(self, prompt: Sequence[int], exclude: KvSlot | None = None) -> tuple[KvSlot | None, int]:
        """The slot (busy or idle) whose tokens share the longest prefix with `prompt`, and that length.

        The match stops one token short of the whole prompt: the last prompt token must be computed to
        get the logits the first sampled token comes from (llama-server backs off the same way)."""
        if not self.reuse_prefixes or len(prompt) < 2:
            return None, 0
        best, best_len = None, 0
        limit = len(prompt) - 1
        for slot in self.slots:
            if slot is exclude or len(slot.tokens) <= best_len:
                continue
            n = min(common_prefix_len(slot.tokens, prompt), limit)
            if n > best_len:
                best, best_len = slot, n
        return best, best_len

    def take(self, source: KvSlot | None, match: int) -> KvSlot | None:
        """Mark a free slot busy for a new sequence whose prompt matches `match` tokens of `source`;
        None when every slot is busy. Among the places that keep the running slots one run (`_places`):
        an idle `source` itself when its whole content is a prefix of the prompt (nothing is lost), or,
        with streams, whenever it may be taken (a copy into another stream is not free; the cells past the
        match are saved to host RAM first when worth it); else an empty slot, else the least recently used
        one, so the retained prefixes most likely to be asked for again survive."""
        places = self._places()
        if not places:
            return None
        if source is not None and source in places and (self.keeps_one_run or match == len(source.tokens)):
            chosen = source
        else:
            empty = [s for s in places if not s.tokens]
            chosen = empty[0] if empty else min(places, key=lambda s: s.last_used)
        chosen.is_busy = True
        return chosen

    def _places(self) -> list[KvSlot]:
        """The free slots a new sequence may take: the gaps inside the run of busy slots, else the free
        slots on either side of it, else (nothing busy) every slot."""
        busy = [s.index for s in self.slots if s.is_busy]
        if not busy or not self.keeps_one_run:
            return [s for s in self.slots if not s.is_busy]
        lo, hi = busy[0], busy[-1]
        gaps = [s for s in self.slots[lo:hi] if not s.is_busy]
        if gaps:
            return gaps
        return [self.slots[i] for i in (lo - 1, hi + 1) if 0 <= i < len(self.slots)]

    def gap_to_fill(self) -> tuple[KvSlot, KvSlot] | None:
        """When the busy slots are no longer one run: (a busy slot at an end of the run, the free slot
        inside the run to move it to): the last one to the lowest gap or the first one to the highest,
        whichever sequence holds fewer tokens (the cheaper copy). Each move closes one gap."""
        busy = [s for s in self.slots if s.is_busy]
        if not self.keeps_one_run or not busy or busy[-1].index - busy[0].index + 1 == len(busy):
            return None
        gaps = [s for s in self.slots[busy[0].index : busy[-1].index] if not s.is_busy]
        if len(busy[0].tokens) < len(busy[-1].tokens):
            return busy[0], gaps[-1]
        return busy[-1], gaps[0]

    def release(self, slot: KvSlot) -> None:
        slot.is_busy = False
        slot.last_used = next(self._ticks)
        slot.released_at_s = time.monotonic()

    def idle_to_evict(
        self, *, budget_tokens: int | None = None, grace_s: float = IDLE_GRACE_S
    ) -> list[KvSlot]:
        """Idle slots to empty, least recently used first, until the cells only idle slots hold fit in
        `budget_tokens` (default: what the busy slots hold, at least MIN_IDLE_BUDGET_TOKENS); a slot idle
        for less than `grace_s` is kept even over it."""
        idle = [s for s in self.slots if not s.is_busy and s.tokens]
        if not idle:
            return []
        busy = [s for s in self.slots if s.is_busy and s.tokens]
        if budget_tokens is None:
            budget_tokens = max(MIN_IDLE_BUDGET_TOKENS, sum(len(b.tokens) for b in busy))
        # This runs before every decode step: the prefix comparisons below only when they can matter.
        now = time.monotonic()
        if sum(len(s.tokens) for s in idle) <= budget_tokens or all(
            now - s.released_at_s < grace_s for s in idle
        ):
            return []
        # Cells an idle slot shares with a running sequence are kept for that sequence anyway. Prefixes
        # shared between idle slots are counted for each (an over-estimate: evicts a little early).
        own = {
            id(s): len(s.tokens) - max((common_prefix_len(s.tokens, b.tokens) for b in busy), default=0)
            for s in idle
        }
        total = sum(own.values())
        if total <= budget_tokens:
            return []
        chosen = []
        for slot in sorted(idle, key=lambda s: s.last_used):
            if total <= budget_tokens:
                break
            if now - slot.released_at_s >= grace_s:
                chosen.append(slot)
                total -= own[id(slot)]
        return chosen

    def forget_all(self) -> None:
        """After the context's memory was cleared: no slot holds anything."""
        for slot in self.slots:
            slot.tokens.clear()
