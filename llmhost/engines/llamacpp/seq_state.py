"""A sequence's KV state saved from a llama.cpp context (`llama_state_seq_get_data`), in pages of its
own, and rewritten for a context of the other KV layout (one stream per sequence, or one pool)."""

from __future__ import annotations

import ctypes
import mmap

_WORD = 4  # llama.cpp writes a state's counts as uint32
_HEADER = 2 * _WORD  # before a sequence's state: llama.cpp's magic word and the saving sequence's id


class SeqState:
    """A sequence's saved KV state in pages of its own (an anonymous mmap), which go back to the OS when
    it is dropped.

    Why not bytes: states are ~10-20 MB each, saved and evicted all the time. In the heap, glibc's malloc
    raises its mmap threshold after the first such block is freed and serves the next ones from its
    arenas, which fragment: a 10-minute mixed load left ~300 MiB of RSS beyond what the cache held."""

    __slots__ = ("_pages", "buffer", "capacity", "size")

    def __init__(self, capacity: int) -> None:
        self.capacity = max(capacity, 1)
        self._pages = mmap.mmap(-1, self.capacity)
        self.buffer = (ctypes.c_uint8 * self.capacity).from_buffer(self._pages)
        self.size = 0  # bytes llama.cpp wrote

    def __len__(self) -> int:
        return self.size

    @property
    def num_streams(self) -> int:
        """The KV streams of the context that saved it (the word after llama.cpp's header)."""
        if self.size < _HEADER + _WORD:
            return 0
        return int.from_bytes(self._pages[_HEADER : _HEADER + _WORD], "little")

    def for_streams(self, num_streams: int) -> SeqState | None:
        """This state as a context with `num_streams` KV streams reads it (a switch of KV layout keeps
        the saved prefixes). A sequence's state is a header (a magic word, the saving sequence's id), its
        context's stream count, then a block per stream, an empty one a zero cell count; the sequence's
        cells are all in one block (its stream, or the pool), and llama.cpp restores a block into the
        target sequence's stream whichever it came from. So the one block is kept and the empty ones
        rewritten. None when the bytes around the block are not the empty blocks. Only for a model whose
        memory is one KV cache (`has_plain_kv_cache`): a sliding-window model's state holds two in a row,
        which this cannot tell apart (llama.cpp then refuses the rewritten state: its second stream count
        is wrong)."""
        data = self._pages[: self.size]
        old, first = self.num_streams, _HEADER + _WORD  # where the first stream's block starts
        empty = bytes(_WORD)
        leading = 0
        while leading < old and data[first + _WORD * leading : first + _WORD * (leading + 1)] == empty:
            leading += 1
        start = first + _WORD * leading
        if leading == old:  # no cells at all
            if start != self.size:
                return None
            block = b""
        else:
            trailing = old - 1 - leading
            end = self.size - _WORD * trailing
            if end <= start or data[end:] != empty * trailing:
                return None
            block = data[start:end]
        empties = num_streams if not block else num_streams - 1
        out = data[:_HEADER] + num_streams.to_bytes(_WORD, "little") + block + empty * empties
        converted = SeqState(len(out))
        converted._pages[: len(out)] = out
        converted.size = len(out)
        return converted
