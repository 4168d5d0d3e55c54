"""Which KV layout the traffic pays for, when the layout is left automatic (no `--kv-unified` /
`--no-kv-unified`): a stream per sequence, or one pool of cells for them all.

Neither wins everywhere (docs/performance.md#kv-layout). With streams each query reads only its own
sequence's cells; in the pool every query's attention computes over the pool's whole used range, so
distinct contexts make each step slower (8 x 600 distinct tokens: +35%). But when the sequences share
one long prefix, the pool stores it once and reads it once for all of them, where streams hold and read
a copy each (8 sequences sharing 700 tokens: prompt steps ~20% and decode steps ~10% faster in the pool).

The advisor watches how much of what the running sequences hold is shared: the sum of their lengths
over the distinct tokens of them all (a prefix tree's size; `sharing_ratio`), weighted by how long each
step took. Of n sequences holding L tokens in all, U of them distinct (ratio r = L / U), the pool reads
L - U fewer cells but computes n·U - L more (every query over the pool's whole range). Measured here (8
sequences, decode steps, `benchmarks`-style drive of the backend): the pool was 4% faster at 700 shared
+ 20 distinct tokens each (r 6.7) and 18% at 1,500 + 100 (r 5.6), but 20% slower at 700 + 100 (r 4.3),
16% at 400 + 50 (r 4.5), 12% at 300 + 100 (r 2.9): a read saved is worth about one computed, so the
pool breaks even near r = (n + 1) / 2 (`break_even`). When most of the recent busy time ran well above
it the pool pays; well below, streams do.
A switch recreates the llama.cpp context (~0.7 s on the embedded model; the scheduler does it, only
while nothing runs), so the advisor decides on a window of busy time, between thresholds far apart, and
never switches twice within `MIN_SWITCH_INTERVAL_S`: an alternating load costs at most one switch per
interval.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

from llmhost.engines.host_prefix_cache import common_prefix_len

# A step favours the pool at a sharing ratio of at least MARGIN x break_even(n), streams at most
# break_even(n) / MARGIN; between them the two layouts cost about the same and the current one stays.
MARGIN = 1.2
# The busy time (decode steps with at least two sequences) a decision reads, and the share of it that
# must favour the other layout.
WINDOW_S = 2.0
WINNING_SHARE = 0.75
# Recreating the context stops the engine for ~0.7 s: at most one switch in this long.
MIN_SWITCH_INTERVAL_S = 30.0


def break_even(num_seqs: int) -> float:
    """The sharing ratio at which n sequences cost about the same in the pool as in streams."""
    return (num_seqs + 1) / 2


def favours_pool(ratio: float, num_seqs: int) -> bool:
    return ratio >= MARGIN * break_even(num_seqs)


def favours_streams(ratio: float, num_seqs: int) -> bool:
    return ratio <= break_even(num_seqs) / MARGIN


def sharing_ratio(contents: Iterable[list[int]]) -> float:
    """Tokens the sequences hold in all, over the distinct prefixes among them (1.0: nothing shared).

    Sorted, each sequence shares with the others at most its common prefix with a neighbour, so the
    distinct tokens are the lengths' sum less the neighbours' common prefixes (a prefix tree's nodes)."""
    ordered = sorted(c for c in contents if len(c))  # (lists of token ids: no copies)
    total = sum(len(c) for c in ordered)
    if total == 0:
        return 1.0
    shared = sum(common_prefix_len(a, b) for a, b in zip(ordered, ordered[1:], strict=False))
    return total / (total - shared)


class KvLayoutAdvisor:
    """Says when the engine should switch KV layouts; `unified` is the one it has now."""

    def __init__(self, unified: bool, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.unified = unified
        self._clock = clock
        self._window: deque[tuple[bool, float]] = deque()  # (favours the other layout, seconds) of steps
        self._window_s = 0.0
        self._last_switch_at: float | None = None
        self.num_switches = 0

    def observe(self, ratio: float, num_seqs: int, seconds: float) -> None:
        """One decode step of `num_seqs` (at least two) sequences: their sharing ratio and how long it
        took."""
        other = favours_streams(ratio, num_seqs) if self.unified else favours_pool(ratio, num_seqs)
        self._window.append((other, seconds))
        self._window_s += seconds
        while self._window and self._window_s - self._window[0][1] >= WINDOW_S:
            self._window_s -= self._window.popleft()[1]

    def should_switch(self) -> bool:
        """Whether the other layout paid over the last WINDOW_S of busy time (and no switch was made in
        the last MIN_SWITCH_INTERVAL_S)."""
        if self._window_s < WINDOW_S:
            return False
        if self._last_switch_at is not None and self._clock() - self._last_switch_at < MIN_SWITCH_INTERVAL_S:
            return False
        favouring = sum(seconds for other, seconds in self._window if other)
        return favouring >= WINNING_SHARE * self._window_s

    def switched(self) -> None:
        """The engine now has the other layout: what was observed under the old one is dropped."""
        self.unified = not self.unified
        self._window.clear()
        self._window_s = 0.0
        self._last_switch_at = self._clock()
        self.num_switches += 1
