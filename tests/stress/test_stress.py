"""Stress tier: a smaller run of `benchmarks/stress.py` against a real server on loopback.

120 requests (two identical waves of 60, to tell one-off memory growth from a leak) at concurrency 32,
with `--max-queued-requests 4`: capacity is 8 + 4 sequences, so the server really answers 429. Every
check of the benchmark must pass: 200 with a well-formed answer or 429 with Retry-After, nothing else,
no transport error, metrics that agree with the clients, healthy and at full capacity afterwards, VmRSS
within 1.1x of the warm-up's, no ERROR in the server log.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from stress import StressConfig, print_summary, run_stress  # noqa: E402

pytestmark = pytest.mark.stress


def test_stress_small(tmp_path):
    cfg = StressConfig(requests=60, waves=2, concurrency=32, max_queued=4, warmup_rounds=1, deadline_s=150.0)
    report = run_stress(cfg, log_dir=tmp_path)
    print_summary(report)  # shown by pytest when the test fails
    failed = [f"{c.name}: {c.detail}" for c in report.checks if not c.passed]
    assert report.passed, "\n".join(failed)
    assert report.total("429") >= 1, "the server never answered 429: admission control was not exercised"
    assert report.total("200") >= 1
