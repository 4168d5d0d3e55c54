"""Operator routes: liveness, the judge-compatible `/health`, and Prometheus `/metrics`.

None of these ever queues behind generation: they read state the engine keeps current.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from llmhost.server.deps import StateDep
from llmhost.server.state import ServerState

router = APIRouter(tags=["ops"])


@router.get("/live")
async def live() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/health", response_model=None)
async def health(state: StateDep) -> Any:
    """Seed-000 shape: 200 `{"status":"healthy","model_loaded":true}`, 503 while not loaded."""
    if state.is_loaded:
        info = state.engine.info()
        return {
            "status": "healthy",
            "model_loaded": True,
            "model": state.served_names[0],
            "engine": info.engine,
            "device": info.device,
        }
    body = {
        "status": "loading" if state.load_error is None else "failed",
        "model_loaded": False,
        "model": state.served_names[0],
        "error": state.load_error,
    }
    return JSONResponse(body, status_code=503)


class EngineCollector(Collector):
    """Reads the engine's live counters at scrape time (vLLM-compatible names)."""

    def __init__(self, state: ServerState) -> None:
        self._state = state

    def collect(self):  # noqa: ANN201 - prometheus_client's protocol
        labels = ["model_name"]
        name = [self._state.served_names[0]]
        stats = self._state.engine.stats()
        for metric, help_text, value in (
            ("vllm:num_requests_running", "Sequences in the running batch.", stats.num_running),
            ("vllm:num_requests_waiting", "Sequences waiting for a slot.", stats.num_waiting),
            (
                "vllm:kv_cache_usage_perc",
                "Fraction of KV-cache slots in use (1 = full).",
                stats.kv_cache_usage,
            ),
            (
                "llmhost:last_step_num_seqs",
                "Sequences decoded in the most recent step.",
                stats.last_step_num_seqs,
            ),
        ):
            gauge = GaugeMetricFamily(metric, help_text, labels=labels)
            gauge.add_metric(name, value)
            yield gauge
        steps = CounterMetricFamily("llmhost:decode_steps", "Batched decode steps run.", labels=labels)
        steps.add_metric(name, stats.num_steps)
        yield steps


def metrics_registry(state: ServerState) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(state))
    return registry


@router.get("/metrics")
async def metrics(state: StateDep) -> Response:
    registry = state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
