"""From settings to Ray Serve options (llmhost/ray_serve/options.py) and the merged `/metrics` page
(fleet_metrics.py): no Ray needed."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from llmhost.config import Settings
from llmhost.ray_serve import fleet_metrics, options
from llmhost.server.metrics import ServerMetrics
from llmhost.types import EngineStats


def test_fixed_replicas_reserve_a_cpu_each_and_run_that_many_threads():
    settings = Settings(ray=True, ray_replicas=3)
    replica = options.replica_options(settings)
    assert replica["num_replicas"] == 3 and "autoscaling_config" not in replica
    assert replica["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert replica["graceful_shutdown_timeout_s"] == settings.shutdown_grace
    # Serve must let every request through to the replica's own admission (its 429s).
    assert replica["max_ongoing_requests"] == settings.max_num_seqs + settings.max_queued_requests
    assert options.replica_settings(settings)["threads"] == 1
    assert options.replica_settings(Settings(ray_num_cpus=4))["threads"] == 4
    assert options.replica_settings(Settings(threads=2, ray_num_cpus=4))["threads"] == 2


def test_autoscaling_between_min_and_max_aims_at_max_num_seqs_by_default():
    replica = options.replica_options(Settings(ray_min_replicas=2, ray_max_replicas=6, max_num_seqs=16))
    assert "num_replicas" not in replica
    assert replica["autoscaling_config"] == {
        "min_replicas": 2,
        "max_replicas": 6,
        "target_ongoing_requests": 16,
    }
    scaled = options.replica_options(Settings(ray_max_replicas=4, ray_target_ongoing_requests=3))
    assert scaled["autoscaling_config"]["min_replicas"] == 1
    assert scaled["autoscaling_config"]["target_ongoing_requests"] == 3


def test_autoscaling_bounds_are_checked():
    with pytest.raises(ValidationError, match="needs --ray-max-replicas"):
        Settings(ray_min_replicas=2)
    with pytest.raises(ValidationError, match="must not exceed"):
        Settings(ray_min_replicas=5, ray_max_replicas=2)


def test_gpu_engines_reserve_their_tensor_parallel_gpus():
    vllm = Settings(engine=["vllm"], tensor_parallel_size=2, replicas=2)
    assert options.replica_options(vllm)["ray_actor_options"]["num_gpus"] == 4
    assert options.replica_gpus(Settings(engine=["vllm"], gpu="none")) == 0
    assert options.replica_gpus(Settings(engine=["transformers"], ray_num_gpus=1)) == 1
    assert options.replica_gpus(Settings()) == 0


def test_the_ingress_takes_everything_and_needs_no_cpu():
    ingress = options.ingress_options(Settings(ray_ingress_replicas=2))
    assert ingress["num_replicas"] == 2 and ingress["ray_actor_options"] == {"num_cpus": 0}
    assert ingress["max_ongoing_requests"] >= options.UNBOUNDED_ONGOING


def test_replica_pages_merge_into_one_with_a_replica_label():
    pages = {}
    for replica, num_running in (("a", 1), ("b", 3)):
        metrics = ServerMetrics("smol", lambda n=num_running: EngineStats(n, 0, 0.0, 0, 0))
        metrics.engine_restarted("x")
        pages[replica] = generate_latest(metrics.registry).decode()
    merged = fleet_metrics.merge(pages).decode()
    running = {
        s.labels["replica"]: s.value
        for f in text_string_to_metric_families(merged)
        for s in f.samples
        if s.name == "vllm:num_requests_running"
    }
    assert running == {"a": 1.0, "b": 3.0}
    assert merged.count("# TYPE vllm:num_requests_running gauge") == 1
    # Histograms and counters keep their types (and their buckets) per replica.
    families = {f.name: f for f in text_string_to_metric_families(merged)}
    assert families["vllm:e2e_request_latency_seconds"].type == "histogram"
    assert {s.labels["replica"] for s in families["vllm:e2e_request_latency_seconds"].samples} == {"a", "b"}
