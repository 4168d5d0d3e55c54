"""Whether the clients whose requests just ended are about to send their next ones.

Closed-loop clients (an eval harness, a judge's reward batch, eight agents sharing a rubric) send their
next request as soon as the last one ends, and those requests reach the engine spread over tens of
milliseconds (each goes through a client's HTTP stack and the server's parsing and tokenizing; measured
here: 17–80 ms after the last end). An idle engine that starts on the first one computes its prompt alone
and makes the others wait for that whole step: with eight clients sharing a ~700-token rubric that step
was a sixth of every round. So an idle engine may wait a little for the rest (Triton's dynamic batcher's
queue delay and vLLM's `scheduler_delay_factor` do the same), but only while requests that ended in the
last `RETURN_WINDOW_S` still outnumber the requests that came since: one client alone never waits.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

# Requests that ended longer ago than this are not expected back soon (a client that thinks, or runs a
# tool, for longer is not part of a burst).
RETURN_WINDOW_S = 1.0


class ReturningClients:
    """Counts ended requests not yet followed by a new one. `ended` runs on the engine thread,
    `arrived` on the event loop's."""

    def __init__(
        self, window_s: float = RETURN_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window_s = window_s
        self._clock = clock
        self._ended_at: deque[float] = deque()  # time.monotonic() of each unanswered end, oldest first
        self._lock = threading.Lock()

    def ended(self, count: int = 1) -> None:
        now = self._clock()
        with self._lock:
            self._ended_at.extend([now] * count)

    def arrived(self, count: int = 1) -> None:
        """A new request answers the oldest unanswered end."""
        with self._lock:
            for _ in range(min(count, len(self._ended_at))):
                self._ended_at.popleft()

    def expected(self) -> int:
        """How many requests that ended within the window have not been followed by a new one."""
        horizon = self._clock() - self._window_s
        with self._lock:
            while self._ended_at and self._ended_at[0] < horizon:
                self._ended_at.popleft()
            return len(self._ended_at)
