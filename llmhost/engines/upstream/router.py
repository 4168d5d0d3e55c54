"""Which backend (replica) serves a request: the live one with the fewest requests in flight.

A request that carries an affinity key (the engine's `request_id`: a multi-turn code loop passes the
same one every turn) stays on the replica it first went to while that replica is up, so its prefix
cache keeps hitting.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

MAX_AFFINITY_KEYS = 4096


class Router:
    def __init__(self, backends: Sequence[Any]) -> None:
        self._backends = list(backends)
        self._turn = itertools.count()  # breaks ties in turn, so idle replicas share the first requests
        self._affinity: OrderedDict[str, Any] = OrderedDict()

    def live(self) -> list[Any]:
        return [b for b in self._backends if b.base_url is not None]

    def pick(self, affinity_key: str | None = None) -> Any | None:
        live = self.live()
        if not live:
            return None
        if affinity_key is not None:
            pinned = self._affinity.get(affinity_key)
            if pinned is not None and pinned.base_url is not None:
                self._affinity.move_to_end(affinity_key)
                return pinned
        start = next(self._turn) % len(live)
        rotated = live[start:] + live[:start]
        chosen = min(rotated, key=lambda b: b.in_flight)
        if affinity_key is not None:
            self._affinity[affinity_key] = chosen
            self._affinity.move_to_end(affinity_key)
            while len(self._affinity) > MAX_AFFINITY_KEYS:
                self._affinity.popitem(last=False)
        return chosen
