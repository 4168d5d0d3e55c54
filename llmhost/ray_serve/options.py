"""From llmhost's settings to Ray Serve's deployment options: replicas or autoscaling, each replica's
CPUs and GPUs, health, graceful shutdown and routing. Plain dicts, without Ray, so they are checked
anywhere; application.py hands them to Serve.
"""

from __future__ import annotations

import math
from typing import Any

from llmhost.config import Settings

APP_NAME = "llmhost"
REPLICA_DEPLOYMENT = "LlmhostReplica"
INGRESS_DEPLOYMENT = "LlmhostIngress"
ROUTER_CLASS = "llmhost.ray_serve.router:AffinityRouter"

# Engines that run on GPUs: a replica of one reserves --tensor-parallel-size GPUs per engine server.
GPU_ENGINES = ("vllm", "sglang", "lmdeploy")
# Serve would otherwise queue (or refuse) requests before the replica sees them; the replica's own
# admission answers 429 with Retry-After instead, as `llmhost serve` does. With an unbounded queue
# (--max-queued-requests unset), this many.
UNBOUNDED_ONGOING = 100_000
# The ingress only relays, so it takes everything and lets the replicas decide.
INGRESS_MAX_ONGOING = 100_000


def replica_cpus(settings: Settings) -> float:
    """CPUs Ray reserves for each replica: --ray-num-cpus, else --threads, else 1."""
    if settings.ray_num_cpus is not None:
        return settings.ray_num_cpus
    return float(settings.threads) if settings.threads is not None else 1.0


def replica_gpus(settings: Settings) -> float:
    """GPUs Ray reserves for each replica: --ray-num-gpus, else every engine server's
    --tensor-parallel-size GPUs for a GPU engine, else none."""
    if settings.ray_num_gpus is not None:
        return settings.ray_num_gpus
    if settings.engine and settings.engine[0] in GPU_ENGINES and settings.gpu.strip() not in ("none", "cpu"):
        return float(settings.tensor_parallel_size * settings.replicas)
    return 0.0


def replica_settings(settings: Settings) -> dict[str, Any]:
    """The settings a replica builds its engine and app from. The in-process llama.cpp engine would run a
    thread per core of the node; a replica runs as many as the CPUs Ray reserved for it."""
    update: dict[str, Any] = {}
    if settings.threads is None:
        update["threads"] = max(1, math.floor(replica_cpus(settings)))
    return settings.model_copy(update=update).model_dump(mode="json")


def is_autoscaling(settings: Settings) -> bool:
    return settings.ray_max_replicas is not None


def replica_options(settings: Settings) -> dict[str, Any]:
    """`serve.deployment(...)` options of the replica deployment (its request router is added by
    application.py, which imports Ray)."""
    options: dict[str, Any] = {
        "name": REPLICA_DEPLOYMENT,
        "ray_actor_options": {"num_cpus": replica_cpus(settings), "num_gpus": replica_gpus(settings)},
        "max_ongoing_requests": _max_ongoing(settings),
        # Serve stops routing to a replica it stops, then waits this long for its requests to finish.
        "graceful_shutdown_timeout_s": settings.shutdown_grace,
    }
    if is_autoscaling(settings):
        options["autoscaling_config"] = {
            "min_replicas": settings.ray_min_replicas if settings.ray_min_replicas is not None else 1,
            "max_replicas": settings.ray_max_replicas,
            # A replica decodes --max-num-seqs sequences in one step; past that they queue.
            "target_ongoing_requests": settings.ray_target_ongoing_requests or settings.max_num_seqs,
        }
    else:
        options["num_replicas"] = settings.ray_replicas
    return options


def ingress_options(settings: Settings) -> dict[str, Any]:
    return {
        "name": INGRESS_DEPLOYMENT,
        "num_replicas": settings.ray_ingress_replicas,
        "ray_actor_options": {"num_cpus": 0},
        "max_ongoing_requests": INGRESS_MAX_ONGOING,
        "graceful_shutdown_timeout_s": settings.shutdown_grace,
    }


def router_kwargs(settings: Settings) -> dict[str, Any]:
    return {"max_imbalance": settings.ray_affinity_max_imbalance}


def _max_ongoing(settings: Settings) -> int:
    if settings.max_queued_requests is None:
        return UNBOUNDED_ONGOING
    return settings.max_num_seqs * settings.replicas + settings.max_queued_requests
