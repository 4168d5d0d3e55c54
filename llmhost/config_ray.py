"""The settings of `llmhost serve --ray` (docs/ray.md): the same app as replicas across a Ray cluster.
Part of `Settings` (config.py): each is a flag, an environment variable and a YAML key like the others."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator


class RaySettings(BaseModel):
    ray: bool = Field(
        False,
        description="Serve through Ray Serve: --ray-replicas copies of this app, each with its own engine, "
        "on a Ray cluster, behind Ray's HTTP proxy on --host/--port (needs `pip install 'llmhost[ray]'`).",
    )
    ray_address: str | None = Field(
        None,
        description="With --ray: the cluster to deploy to (its head's HOST:PORT, ray://HOST:PORT, or auto). "
        "Default: start a one-node cluster in this process.",
    )
    ray_replicas: int = Field(
        1, ge=1, le=4096, description="With --ray: replicas to run, each loading the model (no autoscaling)."
    )
    ray_min_replicas: int | None = Field(
        None, ge=0, le=4096, description="With --ray-max-replicas: the fewest replicas autoscaling keeps."
    )
    ray_max_replicas: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="With --ray: autoscale between --ray-min-replicas (default 1) and this many replicas on "
        "the requests in flight (--ray-target-ongoing-requests); --ray-replicas is then unused.",
    )
    ray_target_ongoing_requests: float | None = Field(
        None,
        gt=0,
        description="With autoscaling: requests in flight per replica Ray Serve aims for. Default: "
        "--max-num-seqs (what a replica decodes at once).",
    )
    ray_num_cpus: float | None = Field(
        None,
        ge=0,
        description="With --ray: CPUs Ray reserves for each replica. Default: --threads, else 1; the "
        "llama.cpp engine runs that many threads unless --threads says otherwise.",
    )
    ray_num_gpus: float | None = Field(
        None,
        ge=0,
        description="With --ray: GPUs Ray reserves for each replica. Default: --tensor-parallel-size x "
        "--replicas for vllm, sglang and lmdeploy, else 0.",
    )
    ray_ingress_replicas: int = Field(
        1,
        ge=1,
        le=1024,
        description="With --ray: replicas of the ingress, which reads each request and relays it to the "
        "replica that has its conversation or prompt prefix cached.",
    )
    ray_affinity_max_imbalance: int = Field(
        8,
        ge=0,
        description="With --ray: a request keeps to the replica that has its session or prefix cached "
        "unless that one has this many more requests in flight than the least busy (0: load only).",
    )
    ray_proxy_location: Literal["HeadOnly", "EveryNode"] = Field(
        "HeadOnly",
        description="With --ray: where Ray's HTTP proxy listens on --host/--port: the head node only, or "
        "every node (put a load balancer in front).",
    )

    @model_validator(mode="after")
    def _check_ray_autoscaling(self) -> RaySettings:
        if self.ray_min_replicas is not None and self.ray_max_replicas is None:
            raise ValueError("--ray-min-replicas needs --ray-max-replicas (autoscaling between the two)")
        if self.ray_max_replicas is not None and (self.ray_min_replicas or 0) > self.ray_max_replicas:
            raise ValueError(
                f"--ray-min-replicas ({self.ray_min_replicas}) must not exceed "
                f"--ray-max-replicas ({self.ray_max_replicas})"
            )
        return self
