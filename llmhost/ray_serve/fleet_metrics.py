"""`/metrics` of every replica as one Prometheus page: each replica's series, labelled `replica="ID"`.

The ingress fetches each replica's own `/metrics` and merges them here, so one scrape target shows the
whole deployment and per-replica series stay apart (sum them in queries: `sum(rate(...))`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

REPLICA_LABEL = "replica"
CONTENT_TYPE = CONTENT_TYPE_LATEST


def merge(pages: Mapping[str, str]) -> bytes:
    """One exposition-format page from `{replica id: that replica's /metrics text}`."""
    families: dict[str, Metric] = {}
    for replica_id, text in sorted(pages.items()):
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type)
            for sample in family.samples:
                labels = {**sample.labels, REPLICA_LABEL: replica_id}
                merged.samples.append(sample._replace(labels=labels))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families.values())))
    return generate_latest(registry)


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)
