"""The request router of the replica deployment: affinity first (routing.py), load otherwise.

Ray Serve runs one router per caller process (each ingress replica here); it sees the `RelayedRequest`
the ingress passes, so it can read the affinity key the ingress worked out from the body. Serve's
request-router API is alpha in Ray 2.60; this module is all that depends on it. Serve copies this
module into each process by value: state it shares lives in known_replicas.py.
"""

from __future__ import annotations

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from llmhost.ray_serve import known_replicas, routing
from llmhost.ray_serve.relay import RelayedRequest


class AffinityRouter(RequestRouter):
    def initialize_state(self, max_imbalance: int = 8) -> None:
        self._max_imbalance = max_imbalance
        known_replicas.register(self.app_name, self)

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        request = _relayed(pending_request)
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        cache = self.replica_queue_len_cache
        ranks = routing.choose(
            request.affinity_key if request else None,
            request.pinned_replica if request else None,
            list(by_id),
            {i: cache.get(r.replica_id) for i, r in by_id.items()},
            max_imbalance=self._max_imbalance,
        )
        return [[by_id[i] for i in rank] for rank in ranks]


def _relayed(pending_request: PendingRequest | None) -> RelayedRequest | None:
    if pending_request is None:
        return None
    for arg in pending_request.args:
        if isinstance(arg, RelayedRequest):
            return arg
    return None
