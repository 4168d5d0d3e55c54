"""`llmhost bench`: its statistics on known samples, its prompts, its stream parsing, and the command as a
user runs it (a subprocess) against a real server, a dead port and an unknown model."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest

from llmhost.benchmarking import loadgen
from llmhost.benchmarking.runner import parse_concurrency
from llmhost.benchmarking.stats import LATENCIES, RequestResult, benchmark_metrics, summarize
from llmhost.benchmarking.workload import Prompt, WorkloadError, load_prompts, random_prompts, take
from tests.conftest import free_port

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STAT_KEYS = {f"{s}_{m}_ms" for m in LATENCIES for s in ("mean", "median", "std", "p90", "p99")}
RUN_KEYS = STAT_KEYS | {
    "max_concurrency", "duration", "completed", "failed", "total_input_tokens", "total_output_tokens",
    "request_throughput", "output_throughput", "total_token_throughput", "errors", "input_lens",
    "output_lens", "num_input_estimated", "num_input_unknown",
}  # fmt: skip


def llmhost_bench(*args: str, timeout: float = 280) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmhost", "bench", *args], capture_output=True, text=True, timeout=timeout
    )


# -- statistics ------------------------------------------------------------------------------------
def test_percentiles_interpolate_linearly_like_numpy_and_vllm():
    stats = summarize([float(v) for v in range(1, 101)], "ttft")
    assert stats["mean_ttft_ms"] == 50.5
    assert stats["median_ttft_ms"] == 50.5
    assert stats["p90_ttft_ms"] == pytest.approx(90.1)
    assert stats["p99_ttft_ms"] == pytest.approx(99.01)
    assert stats["std_ttft_ms"] == pytest.approx(28.866, abs=1e-3)
    assert summarize([10.0, 20.0], "itl")["p90_itl_ms"] == pytest.approx(19.0)
    assert summarize([7.0], "e2el") == {
        "mean_e2el_ms": 7.0, "median_e2el_ms": 7.0, "std_e2el_ms": 0.0, "p90_e2el_ms": 7.0,
        "p99_e2el_ms": 7.0,
    }  # fmt: skip


def test_no_samples_give_zeros_not_missing_keys():
    assert set(summarize([], "tpot").values()) == {0.0}
    metrics = benchmark_metrics([RequestResult(error="boom")], 0.0)
    assert metrics["completed"] == 0 and metrics["failed"] == 1
    assert metrics["request_throughput"] == 0.0 and STAT_KEYS <= set(metrics)


def test_metrics_on_hand_made_requests():
    ok = RequestResult(
        input_tokens=10, output_tokens=5, ttft_s=0.1, itl_s=[0.02, 0.04, 0.02, 0.02], e2el_s=0.2
    )
    one_token = RequestResult(input_tokens=10, output_tokens=1, ttft_s=0.3, e2el_s=0.3)
    failed = RequestResult(input_tokens=99, output_tokens=99, ttft_s=9.0, error="HTTP 500: x")
    assert ok.tpot_s == pytest.approx(0.025) and one_token.tpot_s is None
    m = benchmark_metrics([ok, one_token, failed], 2.0)
    assert (m["completed"], m["failed"]) == (2, 1)
    assert (m["total_input_tokens"], m["total_output_tokens"]) == (20, 6)  # the failure's counts left out
    assert m["request_throughput"] == 1.0 and m["output_throughput"] == 3.0
    assert m["total_token_throughput"] == 13.0
    assert m["mean_ttft_ms"] == pytest.approx(200.0)
    assert m["mean_tpot_ms"] == pytest.approx(25.0)  # only requests with more than one token
    assert m["median_itl_ms"] == pytest.approx(20.0)
    assert m["p99_e2el_ms"] == pytest.approx(299.0)


# -- prompts ---------------------------------------------------------------------------------------
def test_random_prompts_are_seeded_and_sized_by_tokens_per_word():
    a, b = random_prompts(3, 40, seed=7), random_prompts(3, 40, seed=7)
    assert a == b and a != random_prompts(3, 40, seed=8)
    assert all(len(p.text.split()) == 40 for p in a)
    assert {len(p.text.split()) for p in random_prompts(2, 40, tokens_per_word=1.25)} == {32}
    assert a[0].num_tokens_estimate is None
    assert random_prompts(1, 40, tokens_per_word=1.25, fixed_tokens=30.0)[0].num_tokens_estimate == 70


def test_a_jsonl_dataset_of_prompts_and_chats(tmp_path):
    path = tmp_path / "prompts.jsonl"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    lines = [{"prompt": "Hello"}, {"messages": messages, "max_tokens": 3}, {"question": "Why?"}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    prompts = load_prompts(path)
    assert prompts[0].chat_messages() == [{"role": "user", "content": "Hello"}]
    assert prompts[1].chat_messages() == messages and prompts[1].max_tokens == 3
    assert prompts[1].completion_prompt() == "Be brief.\n\nHi"
    assert [p.text for p in take(prompts, 5)] == ["Hello", None, "Why?", "Hello", None]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{oops", "not valid JSON"),
        ('"text"', "expected a JSON object"),
        ('{"answer": "x"}', "needs 'prompt', 'question' or 'messages'"),
        ('{"messages": []}', "'messages' must be a non-empty list"),
        ('{"prompt": "x", "max_tokens": 0}', "'max_tokens' must be a positive integer"),
    ],
)
def test_a_bad_dataset_line_is_named(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "fine"}\n' + line + "\n")
    with pytest.raises(WorkloadError, match=f"p.jsonl:2: {message}"):
        load_prompts(path)


def test_concurrency_lists():
    assert parse_concurrency("1, 4,8") == [1, 4, 8]
    for bad in ("0", "1,,2", "x", "-1"):
        with pytest.raises(ValueError, match="positive integers"):
            parse_concurrency(bad)


# -- stream parsing (canned SSE bodies: what servers without usage or with a cut stream send) -------
def _sse(*events: object) -> bytes:
    return b"".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events)


HI = Prompt(text="hi")


def _send(body: bytes, status: int = 200, prompt: Prompt = HI) -> RequestResult:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"content-type": "text/event-stream"})

    async def go() -> RequestResult:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://x") as http:
            spec = loadgen.RequestSpec("chat", "m", 8)
            return await loadgen.send_request(http, spec, prompt)

    return asyncio.run(go())


def _delta(text: str) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


def test_without_usage_the_text_chunks_are_counted():
    result = _send(_sse({"choices": [{"delta": {"role": "assistant", "content": ""}}]}, _delta("a"),
                        _delta("b"), _delta("c"), "[DONE]"))  # fmt: skip
    assert result.is_ok and result.output_tokens == 3 and result.input_tokens is None
    assert len(result.itl_s) == 2 and result.ttft_s <= result.e2el_s
    estimated = _send(_sse(_delta("a"), "[DONE]"), prompt=Prompt(text="hi", num_tokens_estimate=12))
    assert (estimated.input_tokens, estimated.is_input_estimated) == (12, True)
    metrics = benchmark_metrics([result, estimated], 1.0)
    assert (metrics["num_input_estimated"], metrics["num_input_unknown"]) == (1, 1)
    assert metrics["total_input_tokens"] == 12


def test_usage_wins_over_counting_chunks():
    usage = {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}}
    result = _send(_sse(_delta("ab"), _delta("cd"), usage, "[DONE]"))
    assert result.is_ok and (result.input_tokens, result.output_tokens) == (4, 6)


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (_sse(_delta("a")), 200, "the stream ended before [DONE]"),
        (
            _sse({"choices": [], "usage": {"completion_tokens": 0}}, "[DONE]"),
            200,
            "carried no generated text",
        ),
        (_sse(_delta("a"), {"error": {"message": "engine died"}}), 200, "stream error: engine died"),
        (_sse("{not json"), 200, "JSONDecodeError"),
        (json.dumps({"error": {"message": "no such model"}}).encode(), 404, "HTTP 404: no such model"),
    ],
)
def test_a_failed_stream_is_recorded_with_its_reason(body, status, reason):
    result = _send(body, status)
    assert not result.is_ok and reason in result.error


def test_request_bodies_for_both_endpoints():
    chat = loadgen.RequestSpec("chat", "m", 8).body(Prompt(text="hi", max_tokens=3))
    assert chat["messages"] == [{"role": "user", "content": "hi"}] and chat["max_tokens"] == 3
    assert chat["ignore_eos"] is True and chat["stream"] is True
    assert chat["stream_options"] == {"include_usage": True} and chat["temperature"] == 0.0
    plain = loadgen.RequestSpec("completions", "m", 8, ignore_eos=False, temperature=None)
    body = plain.body(Prompt(text="hi"))
    assert body["prompt"] == "hi" and body["max_tokens"] == 8
    assert "ignore_eos" not in body and "temperature" not in body and "messages" not in body


def test_a_level_keeps_prompt_order_and_the_concurrency_cap_with_poisson_arrivals():
    in_flight, peak, seen = 0, 0, []

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        seen.append(json.loads(request.content)["messages"][0]["content"])
        usage = {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
        body = _sse(_delta(seen[-1]), usage, "[DONE]")
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    async def go() -> tuple[list[RequestResult], float]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://x") as http:
            prompts = [Prompt(text=str(i)) for i in range(6)]
            spec = loadgen.RequestSpec("chat", "m", 1)
            return await loadgen.run_level(http, spec, prompts, concurrency=2, request_rate=1000.0)

    results, duration_s = asyncio.run(go())
    assert len(results) == 6 and all(r.is_ok for r in results) and duration_s > 0
    assert sorted(seen) == [str(i) for i in range(6)] and peak <= 2


def test_a_cancelled_run_reports_what_finished():
    """Ctrl-C cancels the task `asyncio.run` drives; the report keeps the finished requests."""
    from llmhost.benchmarking.runner import BenchConfig, run_benchmark

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "m"}]})
        text = json.loads(request.content)["messages"][0]["content"]
        if text != "fast":
            await asyncio.sleep(30)  # still in flight when the run is cancelled
        return httpx.Response(
            200, content=_sse(_delta("x"), "[DONE]"), headers={"content-type": "text/event-stream"}
        )

    async def go() -> dict:
        config = BenchConfig(url="http://x", concurrency=[2, 4], num_prompts=3)
        prompts = [Prompt(text="fast"), Prompt(text="slow"), Prompt(text="slow")]
        finished = asyncio.Event()
        task = asyncio.create_task(
            run_benchmark(
                config,
                file_prompts=prompts,
                on_result=lambda _: finished.set(),
                transport=httpx.MockTransport(handler),
            )
        )
        await asyncio.wait_for(finished.wait(), 10)
        task.cancel()
        return await task

    report = asyncio.run(go())
    assert report["interrupted"] is True and report["model_id"] == "m"
    assert len(report["runs"]) == 1  # the second level never started
    run = report["runs"][0]
    assert (run["max_concurrency"], run["completed"], run["failed"]) == (2, 1, 0)


# -- the command -----------------------------------------------------------------------------------
def test_a_bad_dataset_or_option_exits_2(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("{oops\n")
    r = llmhost_bench("--url", "http://127.0.0.1:9", "--dataset", str(path))
    assert r.returncode == 2 and "p.jsonl:1: not valid JSON" in r.stderr
    r = llmhost_bench("--url", "http://127.0.0.1:9", "--concurrency", "1,zero")
    assert r.returncode == 2 and "positive integers" in r.stderr
    r = llmhost_bench("--url", "http://127.0.0.1:9", "--endpoint", "embeddings")
    assert r.returncode == 2 and "unknown endpoint" in r.stderr
    r = llmhost_bench("--url", "http://127.0.0.1:9", "--plot", str(tmp_path / "missing" / "p.png"))
    assert r.returncode == 2 and "is not a directory" in r.stderr


@pytest.mark.parametrize("model", [None, "m"])
def test_a_dead_port_fails_every_request_and_exits_1(tmp_path, model):
    out = tmp_path / "r.json"
    args = ["--url", f"http://127.0.0.1:{free_port()}", "--concurrency", "1,2", "--num-prompts", "3"]
    r = llmhost_bench(*args, *(["--model", model] if model else []), "--out", str(out))
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads(out.read_text())
    assert (report["completed"], report["failed"]) == (0, 6)
    for run in report["runs"]:
        assert run["failed"] == 3 and run["completed"] == 0 and RUN_KEYS <= set(run)
        assert run["errors"][0]["count"] == 3 and "ConnectError" in run["errors"][0]["reason"]
    assert "every request failed" in r.stderr


@pytest.mark.e2e
def test_a_live_run_reports_every_level(server, tmp_path):
    out, plot = tmp_path / "report.json", tmp_path / "report.png"
    r = llmhost_bench(
        "--url", server.url, "--concurrency", "1,2", "--num-prompts", "4", "--input-len", "16",
        "--output-len", "8", "--out", str(out), "--plot", str(plot),
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "median TTFT (ms)" in r.stdout and "output tokens/s" in r.stdout
    report = json.loads(out.read_text())
    assert report["model_id"] == "smol" and report["endpoint"] == "/v1/chat/completions"
    assert (report["completed"], report["failed"]) == (8, 0)
    assert report["tokens_per_word"] > 0 and report["fixed_prompt_tokens"] > 0  # from the server's usage
    assert [run["max_concurrency"] for run in report["runs"]] == [1, 2]
    for run in report["runs"]:
        assert RUN_KEYS <= set(run), RUN_KEYS - set(run)
        assert (run["completed"], run["failed"], run["errors"]) == (4, 0, [])
        assert run["output_lens"] == [8] * 4 and run["total_output_tokens"] == 32  # ignore_eos held
        assert all(n > 16 for n in run["input_lens"])  # the prompt plus the chat template
        assert (run["num_input_estimated"], run["num_input_unknown"]) == (0, 0)  # llmhost streams usage
        assert 0 < run["mean_ttft_ms"] <= run["mean_e2el_ms"] and run["p99_ttft_ms"] <= run["p99_e2el_ms"]
        assert run["mean_tpot_ms"] > 0 and run["mean_itl_ms"] > 0
        assert run["duration"] > 0 and run["request_throughput"] > 0 and run["output_throughput"] > 0
        assert run["total_token_throughput"] > run["output_throughput"]

    data = plot.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    import matplotlib.image

    image = matplotlib.image.imread(plot)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


@pytest.mark.e2e
def test_an_unknown_model_fails_every_request_with_the_servers_reason(server, tmp_path):
    out, path = tmp_path / "r.json", tmp_path / "p.jsonl"
    path.write_text('{"prompt": "Hi"}\n{"messages": [{"role": "user", "content": "Yo"}]}\n')
    r = llmhost_bench(
        "--url", server.url, "--model", "no-such-model", "--dataset", str(path), "--out", str(out)
    )
    assert r.returncode == 1, r.stdout + r.stderr
    run = json.loads(out.read_text())["runs"][0]
    assert (run["completed"], run["failed"]) == (0, 2)
    assert run["errors"][0]["count"] == 2 and run["errors"][0]["reason"].startswith("HTTP 404")


@pytest.mark.e2e
def test_the_completions_endpoint_with_a_dataset_and_a_request_rate(server, tmp_path):
    out, path = tmp_path / "r.json", tmp_path / "p.jsonl"
    path.write_text('{"prompt": "Once upon a time", "max_tokens": 3}\n{"prompt": "The sky is"}\n')
    r = llmhost_bench(
        "--url", server.url, "--endpoint", "completions", "--dataset", str(path), "--output-len", "5",
        "--request-rate", "20", "--concurrency", "2", "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(out.read_text())
    assert report["endpoint"] == "/v1/completions" and report["request_rate"] == 20
    assert report["runs"][0]["output_lens"] == [3, 5]  # a line's max_tokens overrides --output-len
