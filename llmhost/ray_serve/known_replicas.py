"""The replicas each application's request router in this process routes to, for the ingress' `/metrics`
fan-out.

Serve copies the router class into each process by value (its module's globals too), so what the router
shares with the ingress lives here, in a module both import by name.
"""

from __future__ import annotations

from typing import Any

# app name -> the live router (ray.serve.request_router.RequestRouter) Serve created in this process
_routers: dict[str, Any] = {}


def register(app_name: str, router: Any) -> None:
    _routers[app_name] = router


def replica_ids(app_name: str) -> list[str]:
    """Ids of the replicas this process' router for `app_name` routes to ([] before the first request
    through it has made Serve create it)."""
    router = _routers.get(app_name)
    return [replica_id.unique_id for replica_id in router.curr_replicas] if router is not None else []
