"""Turning a stream of token bytes into safe text: UTF-8 boundaries and stop strings.

Engine-agnostic: any engine that samples tokens itself (llama.cpp, transformers) feeds each token's
bytes here and gets back text that can be shown now, plus whether a stop string ended the sequence.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class StopStringMatcher:
    """Incremental text accumulator that holds back what might still become a stop string.

    `push()` returns the text that is final. Text that could be the start of a stop string is held
    until the next token decides it; on a match the text before the stop (optionally the stop
    itself) is released and `stopped_by` is set.
    """

    def __init__(self, stop: Sequence[str], *, include_stop: bool = False) -> None:
        self._stop = tuple(stop)
        self._include_stop = include_stop
        self._max_hold = max((len(s) for s in self._stop), default=0) - 1
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""  # decoded text not yet released
        self.stopped_by: str | None = None

    def push(self, piece: bytes) -> str:
        if self.stopped_by is not None:
            return ""
        self._pending += self._decoder.decode(piece)
        if not self._stop:
            out, self._pending = self._pending, ""
            return out
        # Earliest stop string occurrence wins.
        first: tuple[int, str] | None = None
        for s in self._stop:
            i = self._pending.find(s)
            if i != -1 and (first is None or i < first[0]):
                first = (i, s)
        if first is not None:
            i, s = first
            self.stopped_by = s
            out = self._pending[: i + len(s)] if self._include_stop else self._pending[:i]
            self._pending = ""
            return out
        hold = self._held_suffix_len()
        cut = len(self._pending) - hold
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out

    def flush(self) -> str:
        """The sequence ended without a stop string: release everything held."""
        if self.stopped_by is not None:
            return ""
        out = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return out

    def _held_suffix_len(self) -> int:
        """Length of the longest suffix of the pending text that is a proper prefix of a stop string."""
        text = self._pending
        for n in range(min(self._max_hold, len(text)), 0, -1):
            tail = text[-n:]
            if any(s.startswith(tail) for s in self._stop):
                return n
        return 0
