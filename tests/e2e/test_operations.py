"""Operator-facing behaviour of a real server: readiness, metrics, admission control, timeouts."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import start_server, stop_server

pytestmark = pytest.mark.e2e

LONG = {"prompt": "Once upon a time", "max_tokens": 400, "temperature": 0, "ignore_eos": True}


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def running_after_cancel(url: str) -> float:
    """`vllm:num_requests_running` once the engine thread has seen a cancellation.

    A cancelled sequence is freed at the scheduler's next step, which may come just after the
    HTTP answer, so the gauge is polled for a few seconds rather than read once.
    """
    deadline = time.monotonic() + 30  # a step of a long prefill on a loaded machine can take seconds
    while True:
        running = value(scrape(url), "vllm:num_requests_running")
        if running == 0 or time.monotonic() > deadline:
            return running
        time.sleep(0.05)


def value(samples: dict, name: str, **labels: str) -> float:
    for (n, lbls), v in samples.items():
        if n == name and all(dict(lbls).get(k) == want for k, want in labels.items()):
            return v
    return 0.0


def test_live_health_ready(server):
    assert httpx.get(f"{server.url}/live").status_code == 200
    # /health turns 200 when the model is loaded; /ready after the one-token check that follows it.
    for _ in range(100):
        ready = httpx.get(f"{server.url}/ready")
        if ready.status_code == 200:
            break
        time.sleep(0.1)
    assert ready.json() == {"status": "ready"}
    assert httpx.get(f"{server.url}/health").json()["model_loaded"] is True


def test_metrics_count_exactly_what_a_request_did(server):
    before = scrape(server.url)
    r = httpx.post(
        f"{server.url}/v1/completions",
        timeout=60,
        json={"prompt": "Hello there", "max_tokens": 5, "temperature": 0, "ignore_eos": True},
    ).json()
    after = scrape(server.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("vllm:generation_tokens_total") == 5
    assert delta("vllm:prompt_tokens_total") == r["usage"]["prompt_tokens"]
    assert delta("vllm:request_success_total", finished_reason="length") == 1
    assert delta("vllm:time_to_first_token_seconds_count") == 1
    assert delta("vllm:e2e_request_latency_seconds_count") == 1
    assert delta("vllm:inter_token_latency_seconds_count") == 4
    assert value(after, "vllm:num_requests_running", model_name="smol") == 0


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory):
    srv = start_server(
        tmp_path_factory.mktemp("tiny"),
        "--max-model-len",
        "512",
        "--max-num-seqs",
        "1",
        "--max-queued-requests",
        "1",
    )
    yield srv
    stop_server(srv)


async def test_full_queue_gets_429_with_retry_after(tiny_server):
    url = tiny_server.url
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def hold() -> None:
            async with http.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as r:
                async for _ in r.aiter_lines():
                    pass

        holders = [asyncio.create_task(hold()) for _ in range(2)]
        for _ in range(100):  # one running, one waiting: the server is at capacity
            samples = scrape(url)
            if (
                value(samples, "vllm:num_requests_running") == 1
                and value(samples, "vllm:num_requests_waiting") == 1
            ):
                break
            await asyncio.sleep(0.05)
        r = await http.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2})
        assert r.status_code == 429
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["type"] == "rate_limit_error"
        r = await http.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "n": 3}
        )
        assert r.status_code == 429
        for task in holders:
            task.cancel()
        await asyncio.gather(*holders, return_exceptions=True)
        assert value(scrape(url), "llmhost:requests_rejected_total", reason="queue_full") == 2
        for _ in range(100):  # the cancelled streams free their capacity
            r = await http.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2})
            if r.status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert r.status_code == 200


def test_request_timeout_cancels_and_reports(tmp_path):
    srv = start_server(tmp_path, "--max-model-len", "1024", "--max-num-seqs", "2", "--request-timeout", "1")
    try:
        # 900 tokens in one second is far beyond a CPU: the deadline always wins.
        r = httpx.post(f"{srv.url}/v1/completions", json={**LONG, "max_tokens": 900}, timeout=60)
        assert r.status_code == 504
        assert r.json()["error"]["code"] == "request_timeout"
        assert value(scrape(srv.url), "vllm:request_success_total", finished_reason="timeout") == 1
        assert running_after_cancel(srv.url) == 0
        ok = httpx.post(f"{srv.url}/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=60)
        assert ok.status_code == 200
    finally:
        stop_server(srv)


def test_non_stream_client_that_leaves_frees_its_sequence(server):
    body = {"prompt": "Once upon a time", "max_tokens": 900, "temperature": 0, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/completions", json=body, timeout=httpx.Timeout(60, read=1.0))
    assert running_after_cancel(server.url) == 0
    assert value(scrape(server.url), "vllm:request_success_total", finished_reason="abort") >= 1


def test_sandbox_mode_in_health_and_executions_in_metrics(server):
    health = httpx.get(f"{server.url}/health", timeout=10).json()
    assert health["sandbox"] in ("bwrap", "unavailable")  # auto never picks a weaker mode by itself
    before = value(scrape(server.url), "llmhost:sandbox_executions_total", outcome="ok")
    r = httpx.post(
        f"{server.url}/get_observation",
        json={"trajectory_ids": ["t1"], "actions": ["<python>print(6 * 7)</python>"]},
        timeout=60,
    )
    if health["sandbox"] == "unavailable":
        assert r.status_code == 503
        assert value(scrape(server.url), "llmhost:sandbox_executions_total", outcome="unavailable") >= 1
        return
    assert "42" in r.json()["observations"][0]
    assert value(scrape(server.url), "llmhost:sandbox_executions_total", outcome="ok") == before + 1
