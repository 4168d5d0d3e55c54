"""One `llmhost bench` run: find the model, build the prompts, run each concurrency level, report.

The report is a plain dict, ready for JSON: the run's settings, then one entry per concurrency level
in `runs` holding `vllm bench serve`'s keys (`completed`, `failed`, `request_throughput`,
`mean_ttft_ms`, `p99_itl_ms`, …) and the failure reasons with their counts, so nothing fails quietly.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from llmhost.benchmarking import loadgen, workload
from llmhost.benchmarking.stats import RequestResult, benchmark_metrics

log = logging.getLogger(__name__)

DEFAULT_NUM_PROMPTS = 32


@dataclass
class BenchConfig:
    url: str
    model: str | None = None
    endpoint: str = "chat"
    concurrency: list[int] = field(default_factory=lambda: [1])
    num_prompts: int | None = None  # None: DEFAULT_NUM_PROMPTS, or every line of a dataset file
    input_len: int = 128
    output_len: int = 128
    dataset: str = "random"  # or a JSONL path
    request_rate: float = math.inf
    api_key: str | None = None
    ignore_eos: bool = True
    temperature: float | None = 0.0
    seed: int = 0
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.endpoint not in loadgen.ENDPOINTS:
            raise ValueError(
                f"unknown endpoint {self.endpoint!r}; choose one of {', '.join(loadgen.ENDPOINTS)}"
            )
        if not self.concurrency or any(c < 1 for c in self.concurrency):
            raise ValueError("concurrency levels must be positive integers")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise ValueError("num_prompts must be at least 1")
        if self.input_len < 1 or self.output_len < 1:
            raise ValueError("input and output lengths must be at least 1")
        if not self.request_rate > 0:
            raise ValueError("request_rate must be positive (inf sends everything at once)")


def parse_concurrency(text: str) -> list[int]:
    """`"1,4,8"` → `[1, 4, 8]`; a `ValueError` that names the bad part otherwise."""
    levels: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"--concurrency takes positive integers separated by commas, got {part!r}")
        levels.append(int(part))
    return levels


def load_dataset_prompts(config: BenchConfig) -> list[workload.Prompt] | None:
    """The file's prompts (a `WorkloadError` when it is bad), or None for the random dataset."""
    if config.dataset == "random":
        return None
    return workload.load_prompts(config.dataset)


def _level_report(concurrency: int, results: list[RequestResult], duration_s: float) -> dict[str, Any]:
    errors = Counter(r.error for r in results if r.error is not None)
    return {
        "max_concurrency": concurrency,
        **benchmark_metrics(results, duration_s),
        "errors": [{"reason": reason, "count": count} for reason, count in errors.most_common()],
        "input_lens": [r.input_tokens for r in results],
        "output_lens": [r.output_tokens for r in results],
    }


async def run_benchmark(
    config: BenchConfig,
    *,
    file_prompts: list[workload.Prompt] | None = None,
    on_level: Callable[[int, int], None] | None = None,
    on_result: Callable[[RequestResult], None] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Any]:
    """Run every concurrency level in turn with the same prompts; `on_level(concurrency, num_prompts)`
    before each level and `on_result` after each request drive a progress display. Cancelled (Ctrl-C),
    it returns what finished with `interrupted: true` instead of raising."""
    num_prompts = config.num_prompts or (len(file_prompts) if file_prompts else DEFAULT_NUM_PROMPTS)
    report: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "backend": "openai-chat" if config.endpoint == "chat" else "openai",
        "url": config.url,
        "endpoint": loadgen.ENDPOINTS[config.endpoint],
        "model_id": config.model,
        "dataset": config.dataset,
        "num_prompts": num_prompts,
        "input_len": config.input_len if file_prompts is None else None,
        "output_len": config.output_len,
        "request_rate": config.request_rate if math.isfinite(config.request_rate) else "inf",
        "ignore_eos": config.ignore_eos,
        "tokens_per_word": None,
        "fixed_prompt_tokens": None,
        "setup_error": None,
        "interrupted": False,
        "runs": [],
    }
    max_level = max(config.concurrency)
    async with loadgen.http_client(
        config.url,
        concurrency=max_level,
        api_key=config.api_key,
        timeout_s=config.timeout_s,
        transport=transport,
    ) as http:
        model = config.model
        if model is None:
            try:
                model = await loadgen.first_model(http)
            except (httpx.HTTPError, ValueError) as exc:
                # Nothing can be sent without a model name: every request of every level fails with
                # this reason, so the report and the exit code say so.
                reason = f"cannot find a model name (pass --model): {loadgen.error_reason(exc)}"
                report["setup_error"] = reason
                for level in config.concurrency:
                    failed = [RequestResult(error=reason) for _ in range(num_prompts)]
                    report["runs"].append(_level_report(level, failed, 0.0))
                return _with_totals(report)
        report["model_id"] = model
        spec = loadgen.RequestSpec(
            config.endpoint, model, config.output_len, config.ignore_eos, config.temperature
        )
        if file_prompts is not None:
            prompts = workload.take(file_prompts, num_prompts)
        else:
            calibration = await loadgen.calibrate(http, spec)
            if calibration is not None:
                report["tokens_per_word"] = calibration.tokens_per_word
                report["fixed_prompt_tokens"] = calibration.fixed_tokens
            prompts = workload.random_prompts(
                num_prompts,
                config.input_len,
                seed=config.seed,
                tokens_per_word=calibration.tokens_per_word if calibration else 1.0,
                fixed_tokens=calibration.fixed_tokens if calibration else None,
            )
        for level in config.concurrency:
            if on_level is not None:
                on_level(level, num_prompts)
            finished: list[RequestResult] = []

            def record(result: RequestResult, finished: list[RequestResult] = finished) -> None:
                finished.append(result)
                if on_result is not None:
                    on_result(result)

            start = time.perf_counter()
            try:
                results, duration_s = await loadgen.run_level(
                    http,
                    spec,
                    prompts,
                    concurrency=level,
                    request_rate=config.request_rate,
                    seed=config.seed,
                    on_result=record,
                )
            except asyncio.CancelledError:
                # Ctrl-C (asyncio.run cancels this task): keep what finished, so an hour-long run
                # interrupted at its last level still reports; requests in flight are dropped, not failed.
                report["interrupted"] = True
                report["runs"].append(_level_report(level, finished, time.perf_counter() - start))
                break
            report["runs"].append(_level_report(level, results, duration_s))
    return _with_totals(report)


def _with_totals(report: dict[str, Any]) -> dict[str, Any]:
    report["completed"] = sum(run["completed"] for run in report["runs"])
    report["failed"] = sum(run["failed"] for run in report["runs"])
    return report
