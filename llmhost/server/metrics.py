"""Prometheus metrics with vLLM-compatible names, so existing vLLM dashboards work unchanged.

Per-request histograms and counters are recorded by `RequestMetrics` (one per sequence); engine gauges
(running, waiting, KV usage) are read from the engine at scrape time by `EngineCollector`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmhost.types import EngineStats

# fmt: off
_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                    10.0, 20.0, 40.0, 80.0)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2,
                0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
# fmt: on


class EngineCollector(Collector):
    """Reads the engine's live counters at scrape time."""

    def __init__(self, model_name: str, stats: Callable[[], EngineStats]) -> None:
        self._labels = [model_name]
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        for family, name, help_text, value in (
            (
                GaugeMetricFamily,
                "vllm:num_requests_running",
                "Sequences in the running batch.",
                stats.num_running,
            ),
            (
                GaugeMetricFamily,
                "vllm:num_requests_waiting",
                "Sequences waiting for a KV slot.",
                stats.num_waiting,
            ),
            (
                GaugeMetricFamily,
                "vllm:kv_cache_usage_perc",
                "Fraction of KV-cache slots in use.",
                stats.kv_cache_usage,
            ),
            (
                GaugeMetricFamily,
                "llmhost:last_step_num_seqs",
                "Sequences decoded in the most recent step.",
                stats.last_step_num_seqs,
            ),
            (CounterMetricFamily, "llmhost:decode_steps", "Batched decode steps.", stats.num_steps),
            (
                CounterMetricFamily,
                "vllm:prefix_cache_queries",
                "Prompt tokens looked up in the prefix cache.",
                stats.prefix_cache_queries,
            ),
            (
                CounterMetricFamily,
                "vllm:prefix_cache_hits",
                "Prompt tokens found in the prefix cache (not computed).",
                stats.prefix_cache_hits,
            ),
            (
                GaugeMetricFamily,
                "llmhost:prefix_cache_ram_bytes",
                "Bytes of evicted prefixes' KV states kept in host RAM (--prefix-cache-ram-mb).",
                stats.prefix_cache_ram_bytes,
            ),
            (
                CounterMetricFamily,
                "llmhost:prefix_cache_ram_restores",
                "Prefixes restored from host RAM into a KV slot instead of computed.",
                stats.prefix_cache_ram_restores,
            ),
            (
                CounterMetricFamily,
                "llmhost:kv_layout_switches",
                "Switches between a KV stream per sequence and one pool (llama.cpp, automatic layout).",
                stats.kv_layout_switches,
            ),
        ):
            metric = family(name, help_text, labels=["model_name"])
            metric.add_metric(self._labels, value)
            yield metric


class SandboxCollector(Collector):
    """`llmhost:sandbox_executions_total{outcome}`: code runs by outcome (ok, error, timeout, truncated)
    and refusals (busy, unavailable), read from the sandbox's own counters at scrape time."""

    def __init__(self, outcomes: Callable[[], dict[str, int]]) -> None:
        self._outcomes = outcomes

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "llmhost:sandbox_executions", "Sandboxed code executions, by outcome.", labels=["outcome"]
        )
        counts = self._outcomes()
        for outcome in ("ok", "error", "timeout", "truncated", "busy", "unavailable"):
            family.add_metric([outcome], counts.get(outcome, 0))
        yield family


class ServerMetrics:
    """Every metric of one app, in its own registry (several apps can live in one process, e.g. tests)."""

    def __init__(self, model_name: str, stats: Callable[[], EngineStats]) -> None:
        self.model_name = model_name
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(EngineCollector(model_name, stats))
        self.ttft = self._histogram(
            "vllm:time_to_first_token_seconds", "Time to first token.", _LATENCY_BUCKETS
        )
        self.itl = self._histogram(
            "vllm:inter_token_latency_seconds", "Time between generated tokens.", _ITL_BUCKETS
        )
        self.e2e = self._histogram(
            "vllm:e2e_request_latency_seconds", "End-to-end sequence latency.", _LATENCY_BUCKETS
        )
        self.prompt_tokens = self._counter("vllm:prompt_tokens", "Prompt tokens processed.").labels(
            model_name
        )
        self.generation_tokens = self._counter("vllm:generation_tokens", "Tokens generated.").labels(
            model_name
        )
        self._success = self._counter(
            "vllm:request_success", "Sequences finished, by reason.", "finished_reason"
        )
        self._rejected = self._counter(
            "llmhost:requests_rejected", "Requests refused by admission control.", "reason"
        )
        self._engine_restarts = self._counter(
            "llmhost:engine_restarts", "Times a supervised engine server was restarted.", "engine"
        )

    def _histogram(self, name: str, help_text: str, buckets: tuple[float, ...]) -> Any:
        return Histogram(name, help_text, ["model_name"], buckets=buckets, registry=self.registry).labels(
            self.model_name
        )

    def _counter(self, name: str, help_text: str, *extra_labels: str) -> Counter:
        return Counter(name, help_text, ["model_name", *extra_labels], registry=self.registry)

    def watch_sandbox(self, outcomes: Callable[[], dict[str, int]]) -> None:
        self.registry.register(SandboxCollector(outcomes))

    def finished(self, reason: str) -> None:
        self._success.labels(self.model_name, reason).inc()

    def rejected(self, reason: str) -> None:
        self._rejected.labels(self.model_name, reason).inc()

    def engine_restarted(self, engine: str) -> None:
        self._engine_restarts.labels(self.model_name, engine).inc()


class RequestMetrics:
    """Timing of one sequence, fed delta by delta."""

    def __init__(self, metrics: ServerMetrics, num_prompt_tokens: int) -> None:
        self._m = metrics
        self._num_prompt_tokens = num_prompt_tokens
        self._start_s = time.perf_counter()
        self._last_s: float | None = None

    def on_tokens(self, num_tokens: int) -> None:
        if num_tokens <= 0:
            return
        now = time.perf_counter()
        if self._last_s is None:
            self._m.ttft.observe(now - self._start_s)
            self._m.prompt_tokens.inc(self._num_prompt_tokens)
        else:
            gap = (now - self._last_s) / num_tokens  # merged deltas: spread the gap over their tokens
            for _ in range(num_tokens):
                self._m.itl.observe(gap)
        self._m.generation_tokens.inc(num_tokens)
        self._last_s = now

    def on_finish(self, reason: str) -> None:
        self._m.e2e.observe(time.perf_counter() - self._start_s)
        self._m.finished(reason)
