"""Per-request measurements to the summary `vllm bench serve` prints, under the same JSON key names.

Definitions follow vLLM's `benchmark_serving`, so numbers from both tools can sit in one table:
- TTFT: request sent → first chunk carrying generated text;
- ITL: the gaps between successive chunks carrying text (a chunk may hold several tokens);
- TPOT: (e2e latency − TTFT) ÷ (output tokens − 1), for requests with more than one output token;
- E2EL: request sent → last byte of the stream;
- throughputs divide by the wall time of the whole run (`duration`), failed requests included in it.
Percentiles interpolate linearly between samples (numpy's default, as vLLM uses).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

PERCENTILES = (90, 99)
LATENCIES = ("ttft", "tpot", "itl", "e2el")


@dataclass
class RequestResult:
    """One request's measurements; `error` is the reason when it failed (then the timings are partial)."""

    input_tokens: int | None = None  # from the server's usage; None when it reported none
    is_input_estimated: bool = False  # input_tokens is the calibrated estimate (no usage in the stream)
    output_tokens: int = 0
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    e2el_s: float | None = None
    error: str | None = None

    @property
    def is_ok(self) -> bool:
        return self.error is None

    @property
    def tpot_s(self) -> float | None:
        if self.ttft_s is None or self.e2el_s is None or self.output_tokens < 2:
            return None
        return (self.e2el_s - self.ttft_s) / (self.output_tokens - 1)


def summarize(
    values_ms: list[float], name: str, percentiles: tuple[int, ...] = PERCENTILES
) -> dict[str, float]:
    """`mean_<name>_ms`, `median_…`, `std_…` and `p<P>_…` over the samples; all 0.0 when there are none
    (vLLM reports zeros too, so a report's keys never depend on what failed)."""
    data = np.asarray(values_ms, dtype=float)
    has_data = data.size > 0
    out = {
        f"mean_{name}_ms": float(data.mean()) if has_data else 0.0,
        f"median_{name}_ms": float(np.median(data)) if has_data else 0.0,
        f"std_{name}_ms": float(data.std()) if has_data else 0.0,
    }
    for p in percentiles:
        out[f"p{p:g}_{name}_ms"] = float(np.percentile(data, p)) if has_data else 0.0
    return out


def benchmark_metrics(results: list[RequestResult], duration_s: float) -> dict[str, Any]:
    """The run's summary: counts, token totals, throughputs and the latency statistics in ms."""
    ok = [r for r in results if r.is_ok]
    total_input = sum(r.input_tokens or 0 for r in ok)
    total_output = sum(r.output_tokens for r in ok)
    per_s = 1.0 / duration_s if duration_s > 0 else 0.0
    metrics: dict[str, Any] = {
        "duration": duration_s,
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "total_input_tokens": total_input,
        # Requests whose prompt tokens the server did not report: estimated, or unknown (counted as 0).
        "num_input_estimated": sum(r.is_input_estimated for r in ok),
        "num_input_unknown": sum(r.input_tokens is None for r in ok),
        "total_output_tokens": total_output,
        "request_throughput": len(ok) * per_s,
        "output_throughput": total_output * per_s,
        "total_token_throughput": (total_input + total_output) * per_s,
    }
    samples = {
        "ttft": [r.ttft_s * 1000 for r in ok if r.ttft_s is not None],
        "tpot": [r.tpot_s * 1000 for r in ok if r.tpot_s is not None],
        "itl": [gap * 1000 for r in ok for gap in r.itl_s],
        "e2el": [r.e2el_s * 1000 for r in ok if r.e2el_s is not None],
    }
    for name in LATENCIES:
        metrics.update(summarize(samples[name], name))
    return metrics
