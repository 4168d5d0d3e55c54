"""Saved KV states of evicted prompt prefixes, in host RAM (llama-server's `--cache-ram`).

The KV pool holds only what the slots hold: a judge with more rubrics than slots, a RAG service with
many system prompts, or an agent rollout with more trajectories than slots would compute a prefix again
each time another request overwrote its slot. Before the scheduler empties a slot whose cells nobody
else holds, it saves the slot's sequence state (`llama_state_seq_get_data`: the K/V rows of its cells,
exact) here; a new prompt that matches a saved state further than any slot restores it into its own slot
(`llama_state_seq_set_data`) and computes only the rest. A restored prefix is the same numbers that were
computed, so the answer is the one the first computation would give.

Bounded by bytes (`--prefix-cache-ram-mb`); the least recently used states go first. Pure Python: the
scheduler does the saving and restoring on the engine thread. The transformers engine keeps its finished
sequences' KV tensors in the same store (its state is the per-layer tensors instead of llama.cpp's bytes).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_BLOCK = 64  # compare prompts a slice at a time: list slice equality runs in C


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = min(len(a), len(b))
    i = 0
    while i + _BLOCK <= n and a[i : i + _BLOCK] == b[i : i + _BLOCK]:
        i += _BLOCK
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(eq=False)
class SavedPrefix:
    tokens: list[int]  # tokens[p] is the token whose KV the state holds at position p
    state: Any  # llama.cpp: llama_state_seq_get_data of the slot that held them
    num_bytes: int
    last_used: int = 0


@dataclass
class HostPrefixCache:
    max_bytes: int
    entries: list[SavedPrefix] = field(default_factory=list)
    num_bytes: int = 0
    num_saved: int = 0  # states stored since start
    num_restored: int = 0  # states loaded back into a slot since start
    _ticks: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def is_enabled(self) -> bool:
        return self.max_bytes > 0

    def covers(self, tokens: Sequence[int]) -> bool:
        """Whether a saved state already starts with all of `tokens` (saving them again adds nothing)."""
        n = len(tokens)
        return any(len(e.tokens) >= n and common_prefix_len(e.tokens, tokens) == n for e in self.entries)

    def best(self, prompt: Sequence[int]) -> tuple[SavedPrefix | None, int]:
        """The saved state sharing the longest prefix with `prompt`, and that length; like the slots, it
        stops one token short of the whole prompt (the last one is computed for its logits)."""
        if len(prompt) < 2:
            return None, 0
        best, best_len = None, 0
        limit = len(prompt) - 1
        for entry in self.entries:
            if len(entry.tokens) <= best_len:
                continue
            n = min(common_prefix_len(entry.tokens, prompt), limit)
            if n > best_len:
                best, best_len = entry, n
        return best, best_len

    def put(self, tokens: Sequence[int], state: Any, num_bytes: int | None = None) -> bool:
        """Keep `state` (the KV of `tokens`, `num_bytes` big; default: `len(state)`); states whose tokens
        are a prefix of these are dropped (this one serves every prompt they served), then the least
        recently used until it fits. False when it cannot fit at all."""
        size = len(state) if num_bytes is None else num_bytes
        if size > self.max_bytes:
            return False
        tokens = list(tokens)
        n = len(tokens)
        for entry in [e for e in self.entries if len(e.tokens) <= n and tokens[: len(e.tokens)] == e.tokens]:
            self._drop(entry)
        self.entries.sort(key=lambda e: e.last_used)
        while self.entries and self.num_bytes + size > self.max_bytes:
            self._drop(self.entries[0])
        self.entries.append(SavedPrefix(tokens, state, size, next(self._ticks)))
        self.num_bytes += size
        self.num_saved += 1
        return True

    def touch(self, entry: SavedPrefix) -> None:
        """`entry` was just restored: the last to be dropped now."""
        entry.last_used = next(self._ticks)
        self.num_restored += 1

    def discard(self, entry: SavedPrefix) -> None:
        """Forget a state that could not be restored (it would fail again)."""
        if entry in self.entries:
            self._drop(entry)

    def clear(self) -> None:
        self.entries.clear()
        self.num_bytes = 0

    def _drop(self, entry: SavedPrefix) -> None:
        self.entries.remove(entry)
        self.num_bytes -= entry.num_bytes
