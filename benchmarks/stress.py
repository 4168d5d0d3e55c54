"""Bounded stress run against a real llmhost server on loopback: it checks reliability, not speed.

It starts `llmhost serve` as a subprocess on a free 127.0.0.1 port (never any other address) with
admission control on (`--max-num-seqs 8 --max-queued-requests 16 --max-model-len 512` by default), warms
it up, records its resident memory (VmRSS from /proc/PID/status), then sends waves of requests (default:
2 identical waves of 500 requests, 64 at a time) with `httpx.AsyncClient`. The mix: non-streaming and
streaming chat completions, non-streaming and streaming completions, about one in five with `n=2`,
`max_tokens` 8 to 32.

Each client task sends its requests one after the other. A 429 is an accepted answer (the server is
full); the task then waits what `Retry-After` says (at most 2 s) before its next request, as a polite
client would, so the server keeps being offered work instead of being hammered with requests that
bounce. By default a 429 is the request's final answer (each request is counted once, as sent). With
these settings the server stays full (8 running, ~16 waiting) for the whole wave, so most requests of a
wave bounce; `--retries N` sends a rejected request again after its Retry-After, up to N times, which
makes more of them complete and the wave last longer (every 429 answer, retried or final, must still
carry Retry-After).

Checks (each PASS or FAIL in the summary; the script exits 1 if any fails, 0 otherwise):
  answers           every request completed (200 and a well-formed body, or a stream of well-formed
                    chunks ending in `data: [DONE]`) or got 429 with a `Retry-After` header
  no-other-status   zero other 4xx/5xx
  no-transport-err  zero transport errors (refused, reset, timed out)
  metrics-agree     the server's counters moved by what the clients saw: `llmhost:requests_rejected_total`
                    by the 429s, `vllm:request_success_total` (stop + length) by the sequences answered,
                    nothing finished as `abort` or `error`
  healthy-after     /health, /ready and a small request answer 200 once the load is over, and the
                    running/waiting gauges are back to 0
  capacity-after    once idle, max_num_seqs + max_queued simultaneous requests are all admitted (200):
                    no admission slot leaked
  rss-waveN         VmRSS once idle after wave N <= 1.1 x VmRSS after the warm-up, both without the host-RAM
                    prefix cache (`llmhost:prefix_cache_ram_bytes`, bounded by --prefix-cache-ram-mb).
                    Comparing wave 2 with wave 1 separates one-off growth (allocator arenas, caches the first
                    wave filled) from a leak, which grows again with every identical wave: the summary
                    prints both
  no-error-logs     the server logged no ERROR line and no traceback
  deadline          everything finished before the global deadline (default 15 min, server start-up
                    included); past it the run stops, stops the server (20 s at most) and reports what
                    it has

The server runs with `--threads 1` unless `--threads` says otherwise (0: the server's own default, all
cores): llama.cpp's threads spin at barriers, and with other llama.cpp processes on a 2-core machine two
threads fell to ~0.3 decode steps/s. One thread has no barrier to wait at, so the run stays bounded.

Run:  .venv/bin/python benchmarks/stress.py [--requests 500] [--concurrency 64] [--max-queued 16]
                                            [--waves 2] [--retries 0] [--threads 1] [--deadline 900]
                                            [--json results.json] [--keep-log DIR]
Reusable: tests/stress/test_stress.py imports `StressConfig` and `run_stress` from this file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"  # loopback only: the server binds here and every request goes here
READY_TIMEOUT_S = 180.0
IDLE_TIMEOUT_S = 120.0  # most we wait for the running/waiting gauges to reach 0 after a wave
SETTLE_S = 1.0  # after the gauges reach 0, before reading VmRSS
PROGRESS_S = 15.0  # a progress line this often while a wave runs
MAX_BACKOFF_S = 2.0  # a client waits Retry-After seconds after a 429, at most this
RSS_RATIO = 1.1
FINISH_REASONS = {"stop", "length"}

PROMPTS = [
    "Tell me a fact about the moon.",
    "Write one sentence about the sea.",
    "What is the capital of France?",
    "List three colours.",
    "Explain what a computer is in simple words.",
    "Give me a short tip for learning to cook.",
    "Why is the sky blue?",
    "Describe a cat in a few words.",
]
COMPLETION_PROMPTS = [
    "Once upon a time",
    "The best way to learn a language is",
    "In the year 2050, cities will",
    "def fibonacci(n):",
    "The three primary colours are",
]


@dataclass
class StressConfig:
    requests: int = 500  # per wave
    concurrency: int = 64
    waves: int = 2
    max_num_seqs: int = 8
    max_queued: int = 16
    max_model_len: int = 512
    deadline_s: float = 900.0
    seed: int = 0
    # The server's --threads; 0: its default (all cores). One by default: llama.cpp's threads spin at
    # barriers, and on a shared 2-core box where other llama.cpp processes run, two threads per server
    # fell to ~0.3 decode steps/s here (each barrier waits for a descheduled thread); one thread has no
    # barrier, so the run stays bounded. This run checks correctness under load, not speed.
    threads: int = 1
    request_timeout_s: float = 300.0  # client-side timeout of one request
    retries: int = 0  # times a request is sent again after a 429 (0: a 429 is its final answer)
    warmup_rounds: int = 2
    min_max_tokens: int = 8
    max_max_tokens: int = 32


@dataclass
class Outcome:
    kind: str
    n: int
    status: int | None  # None: transport error
    latency_s: float
    problem: str | None = None  # why the answer is not acceptable (None: it is)
    rejected: int = 0  # well-formed 429 answers it got, retried ones included


@dataclass
class WaveReport:
    name: str
    wall_s: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)  # "200", "429", "transport", ...
    by_kind: dict[str, int] = field(default_factory=dict)
    ok_sequences: int = 0  # choices answered by the 200s
    rejected_answers: int = 0  # 429s received, retried ones included
    latency_ok_p50_s: float | None = None
    latency_ok_p99_s: float | None = None
    latency_429_p50_s: float | None = None
    rss_kb: int | None = None  # once idle after the wave
    prefix_cache_kb: int = 0  # of it, the host-RAM prefix cache (bounded by --prefix-cache-ram-mb)
    metric_deltas: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # first few, for the summary


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class StressReport:
    config: dict[str, Any]
    server_pid: int | None = None
    rss_warm_kb: int | None = None
    prefix_cache_warm_kb: int = 0
    waves: list[WaveReport] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    wall_s: float = 0.0
    deadline_hit: bool = False
    fatal: str | None = None  # the run could not go on (server died, deadline, ...)

    @property
    def passed(self) -> bool:
        return self.fatal is None and bool(self.checks) and all(c.passed for c in self.checks)

    def total(self, status: str) -> int:
        return sum(w.statuses.get(status, 0) for w in self.waves)

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)


# -- the server ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS in /proc/PID/status")


@contextmanager
def running_server(cfg: StressConfig, log_dir: Path) -> Iterator[Server]:
    port = free_port()
    log_path = log_dir / f"stress-server-{port}.log"
    cmd = [sys.executable, "-m", "llmhost", "serve", "--host", HOST, "--port", str(port)]
    cmd += ["--max-model-len", str(cfg.max_model_len), "--max-num-seqs", str(cfg.max_num_seqs)]
    cmd += ["--max-queued-requests", str(cfg.max_queued)]
    if cfg.threads:
        cmd += ["--threads", str(cfg.threads)]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    server = Server(f"http://{HOST}:{port}", process, log_path)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()[-3000:]}")
            try:
                if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"server not healthy within {READY_TIMEOUT_S:.0f}s:\n{server.log()[-3000:]}"
                )
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


# -- requests and what a good answer looks like ----------------------------------------------------
@dataclass
class RequestSpec:
    kind: str  # chat, chat_stream, completion, completion_stream
    path: str
    body: dict[str, Any]

    @property
    def n(self) -> int:
        return int(self.body.get("n", 1))

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


KINDS = [("chat", 0.3), ("chat_stream", 0.3), ("completion", 0.25), ("completion_stream", 0.15)]


def make_requests(count: int, seed: int, cfg: StressConfig) -> list[RequestSpec]:
    """A deterministic mix: the same seed gives the same requests (each wave of a run is identical)."""
    rng = random.Random(seed)
    specs = []
    for i in range(count):
        kind = rng.choices([k for k, _ in KINDS], weights=[w for _, w in KINDS])[0]
        body: dict[str, Any] = {
            "max_tokens": rng.randint(cfg.min_max_tokens, cfg.max_max_tokens),
            "temperature": rng.choice([0.0, 0.7, 1.0]),
        }
        if rng.random() < 0.2:
            body["n"] = 2
        if rng.random() < 0.5:
            body["seed"] = i
        if kind.startswith("chat"):
            path = "/v1/chat/completions"
            body["messages"] = [{"role": "user", "content": rng.choice(PROMPTS)}]
        else:
            path = "/v1/completions"
            body["prompt"] = rng.choice(COMPLETION_PROMPTS)
        if kind.endswith("stream"):
            body["stream"] = True
            if rng.random() < 0.5:
                body["stream_options"] = {"include_usage": True}
        specs.append(RequestSpec(kind, path, body))
    return specs


def check_choice_text(kind: str, choice: dict[str, Any]) -> str | None:
    if kind.startswith("chat"):
        message = choice.get("message")
        if not isinstance(message, dict) or message.get("role") != "assistant":
            return f"choice without an assistant message: {choice!r:.200}"
        if not isinstance(message.get("content"), str):
            return f"message content is not a string: {message!r:.200}"
    elif not isinstance(choice.get("text"), str):
        return f"choice text is not a string: {choice!r:.200}"
    return None


def check_body(spec: RequestSpec, body: Any) -> str | None:
    """None if `body` is a well-formed non-streaming answer to `spec`, else what is wrong."""
    want_object = "chat.completion" if spec.kind.startswith("chat") else "text_completion"
    if not isinstance(body, dict) or body.get("object") != want_object:
        return f"not a {want_object} object: {body!r:.200}"
    choices = body.get("choices")
    if not isinstance(choices, list) or sorted(c.get("index") for c in choices) != list(range(spec.n)):
        return f"choices do not have indices 0..{spec.n - 1}: {choices!r:.200}"
    for choice in choices:
        if choice.get("finish_reason") not in FINISH_REASONS:
            return f"finish_reason {choice.get('finish_reason')!r}"
        if problem := check_choice_text(spec.kind, choice):
            return problem
    usage = body.get("usage") or {}
    tokens = usage.get("completion_tokens")
    most = spec.n * spec.body["max_tokens"]
    if not isinstance(tokens, int) or not 0 <= tokens <= most:
        return f"usage.completion_tokens {tokens!r} not in 0..{most}"
    if all(c["finish_reason"] == "length" for c in choices) and tokens != most:
        return f"every choice finished by length but usage.completion_tokens is {tokens}, not {most}"
    return None


def check_stream(spec: RequestSpec, lines: list[str]) -> str | None:
    """None if the SSE lines are a well-formed stream for `spec` that ends in `data: [DONE]`."""
    want_object = "chat.completion.chunk" if spec.kind.startswith("chat") else "text_completion"
    data = [line[5:].strip() for line in lines if line.startswith("data:")]
    if not data or data[-1] != "[DONE]":
        return f"stream does not end in 'data: [DONE]' (last: {data[-1] if data else None!r:.200})"
    finished: Counter[int] = Counter()
    usage_chunks = 0
    for raw in data[:-1]:
        if raw == "[DONE]":
            return "data: [DONE] before the end of the stream"
        try:
            chunk = json.loads(raw)
        except json.JSONDecodeError:
            return f"chunk is not JSON: {raw!r:.200}"
        if not isinstance(chunk, dict) or "error" in chunk or chunk.get("object") != want_object:
            return f"bad chunk: {raw!r:.200}"
        if chunk.get("usage"):
            usage_chunks += 1
        for choice in chunk.get("choices") or []:
            index = choice.get("index")
            if not isinstance(index, int) or not 0 <= index < spec.n:
                return f"chunk choice index {index!r} out of range"
            if spec.kind.startswith("chat"):
                delta = choice.get("delta")
                if not isinstance(delta, dict) or not isinstance(delta.get("content", ""), str | None):
                    return f"bad delta: {choice!r:.200}"
            elif not isinstance(choice.get("text"), str):
                return f"chunk text is not a string: {choice!r:.200}"
            if choice.get("finish_reason") is not None:
                if choice["finish_reason"] not in FINISH_REASONS:
                    return f"finish_reason {choice['finish_reason']!r}"
                finished[index] += 1
    if finished != Counter(range(spec.n)):
        return f"finish_reason per choice index: {dict(finished)}, want one for each of 0..{spec.n - 1}"
    include_usage = bool((spec.body.get("stream_options") or {}).get("include_usage"))
    if usage_chunks != int(include_usage):
        return f"{usage_chunks} usage chunk(s) with include_usage={include_usage}"
    return None


def check_429(response: httpx.Response) -> str | None:
    retry_after = response.headers.get("retry-after")
    if retry_after is None or not retry_after.strip().isdigit():
        return f"429 without a valid Retry-After header ({retry_after!r})"
    try:
        error_type = response.json()["error"]["type"]
    except (ValueError, KeyError, TypeError):
        return f"429 body is not an OpenAI error: {response.text!r:.200}"
    if error_type != "rate_limit_error":
        return f"429 error type {error_type!r}"
    return None


async def send(http: httpx.AsyncClient, spec: RequestSpec, retries: int = 0) -> tuple[Outcome, float]:
    """One request, read to its end; a 429 is sent again after its Retry-After, at most `retries` times.
    Returns the final outcome (its latency from the first attempt) and how long to back off after it."""
    start = time.monotonic()
    rejected = 0
    while True:
        outcome, backoff = await attempt(http, spec)
        rejected += outcome.status == 429 and outcome.problem is None
        if outcome.status != 429 or outcome.problem is not None or rejected > retries:
            break
        await asyncio.sleep(backoff)
    outcome.latency_s = time.monotonic() - start
    outcome.rejected = rejected
    return outcome, backoff


async def attempt(http: httpx.AsyncClient, spec: RequestSpec) -> tuple[Outcome, float]:
    start = time.monotonic()
    backoff = 0.0
    try:
        async with http.stream("POST", spec.path, json=spec.body) as response:
            if response.status_code == 200 and spec.stream:
                lines = [line async for line in response.aiter_lines()]
                problem = check_stream(spec, lines)
            else:
                await response.aread()
                if response.status_code == 200:
                    try:
                        problem = check_body(spec, response.json())
                    except ValueError:
                        problem = f"200 body is not JSON: {response.text!r:.200}"
                elif response.status_code == 429:
                    problem = check_429(response)
                    if problem is None:
                        backoff = min(float(response.headers["retry-after"]), MAX_BACKOFF_S)
                else:
                    problem = f"HTTP {response.status_code}: {response.text!r:.300}"
            status: int | None = response.status_code
    except httpx.HTTPError as exc:
        status, problem = None, f"{type(exc).__name__}: {exc}"
    return Outcome(spec.kind, spec.n, status, time.monotonic() - start, problem), backoff


async def run_wave(
    http: httpx.AsyncClient,
    specs: list[RequestSpec],
    concurrency: int,
    outcomes: list[Outcome],
    retries: int = 0,
) -> None:
    """Send `specs` from `concurrency` client tasks; each outcome is appended to `outcomes` as it comes."""
    queue = iter(specs)

    async def client() -> None:
        for spec in queue:  # one shared iterator: each request is taken once
            outcome, backoff = await send(http, spec, retries)
            outcomes.append(outcome)
            if backoff:
                await asyncio.sleep(backoff)

    await asyncio.gather(*(client() for _ in range(concurrency)))


# -- what the server says about itself ------------------------------------------------------------
async def scrape(http: httpx.AsyncClient) -> dict[str, float]:
    """Sums of the samples this run compares, keyed `name{label=value}` (model label dropped)."""
    text = (await http.get("/metrics")).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name, _, labels = name_labels.partition("{")
        kept = ",".join(
            part for part in labels.rstrip("}").split(",") if part and not part.startswith("model_name=")
        )
        key = f"{name}{{{kept}}}" if kept else name
        try:
            out[key] = out.get(key, 0.0) + float(value)
        except ValueError:
            continue
    return out


def prefix_cache_kb(metrics: dict[str, float]) -> int:
    """The host-RAM prefix cache's size from a scrape: RSS it may take by design, up to its flag."""
    return int(metrics.get("llmhost:prefix_cache_ram_bytes", 0.0)) // 1024


async def wait_idle(http: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + IDLE_TIMEOUT_S
    while True:
        m = await scrape(http)
        if m.get("vllm:num_requests_running", 0) == 0 and m.get("vllm:num_requests_waiting", 0) == 0:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not idle {IDLE_TIMEOUT_S:.0f}s after the load: {m}")
        await asyncio.sleep(0.2)
    await asyncio.sleep(SETTLE_S)


async def progress(
    http: httpx.AsyncClient, name: str, outcomes: list[Outcome], total: int, before: dict[str, float]
) -> None:
    """A line every PROGRESS_S while a wave runs, so a stall shows as it happens."""
    start = time.monotonic()
    while True:
        await asyncio.sleep(PROGRESS_S)
        statuses = Counter("transport" if o.status is None else o.status for o in outcomes)
        try:
            m = await scrape(http)
            steps = m.get("llmhost:decode_steps_total", 0) - before.get("llmhost:decode_steps_total", 0)
            running, waiting = m.get("vllm:num_requests_running", 0), m.get("vllm:num_requests_waiting", 0)
            server = f"running {running:g} waiting {waiting:g} decode steps +{steps:g}"
        except httpx.HTTPError as exc:
            server = f"/metrics failed: {type(exc).__name__}"
        print(
            f"  {name} {time.monotonic() - start:4.0f}s: {len(outcomes)}/{total} answered"
            f" {dict(statuses)}; {server}",
            flush=True,
        )


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def summarize_wave(report: WaveReport, outcomes: list[Outcome]) -> None:
    statuses: Counter[str] = Counter("transport" if o.status is None else str(o.status) for o in outcomes)
    statuses["malformed"] = sum(1 for o in outcomes if o.status in (200, 429) and o.problem)
    report.statuses = dict(sorted(statuses.items()))
    report.by_kind = dict(sorted(Counter(o.kind for o in outcomes).items()))
    ok = [o for o in outcomes if o.status == 200 and o.problem is None]
    report.ok_sequences = sum(o.n for o in ok)
    report.rejected_answers = sum(o.rejected for o in outcomes)
    report.latency_ok_p50_s = percentile([o.latency_s for o in ok], 50)
    report.latency_ok_p99_s = percentile([o.latency_s for o in ok], 99)
    report.latency_429_p50_s = percentile([o.latency_s for o in outcomes if o.status == 429], 50)
    report.problems = [f"{o.kind} n={o.n} -> {o.status}: {o.problem}" for o in outcomes if o.problem][:10]


METRICS_COMPARED = [
    'llmhost:requests_rejected_total{reason="queue_full"}',
    'vllm:request_success_total{finished_reason="stop"}',
    'vllm:request_success_total{finished_reason="length"}',
    'vllm:request_success_total{finished_reason="abort"}',
    'vllm:request_success_total{finished_reason="error"}',
    'vllm:request_success_total{finished_reason="timeout"}',
]


# -- the run ---------------------------------------------------------------------------------------
async def warm_up(http: httpx.AsyncClient, cfg: StressConfig) -> None:
    """Every kind of request, a full batch at a time, `warmup_rounds` times: the batch buffers and the KV
    cache reach the size the load will use, so growth after this is the load's."""
    specs = make_requests(cfg.max_num_seqs * 2, seed=cfg.seed + 1_000_003, cfg=cfg)
    for spec in specs:
        spec.body["max_tokens"] = cfg.max_max_tokens
    for _ in range(cfg.warmup_rounds):
        outcomes = await asyncio.gather(*(send(http, spec) for spec in specs[: cfg.max_num_seqs]))
        outcomes += await asyncio.gather(*(send(http, spec) for spec in specs[cfg.max_num_seqs :]))
        bad = [o for o, _ in outcomes if o.status not in (200, 429) or (o.status == 200 and o.problem)]
        if bad:
            raise RuntimeError(f"warm-up failed: {bad[0]}")
    await wait_idle(http)


async def health_after(http: httpx.AsyncClient) -> Check:
    problems = []
    health = await http.get("/health")
    if health.status_code != 200 or health.json().get("model_loaded") is not True:
        problems.append(f"/health {health.status_code} {health.text[:200]}")
    ready = await http.get("/ready")
    if ready.status_code != 200:
        problems.append(f"/ready {ready.status_code} {ready.text[:200]}")
    spec = RequestSpec("chat", "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]})
    spec.body["max_tokens"] = 4
    outcome, _ = await send(http, spec)
    if outcome.status != 200 or outcome.problem:
        problems.append(f"chat after the load: {outcome.status} {outcome.problem}")
    m = await scrape(http)
    if m.get("vllm:num_requests_running", 0) or m.get("vllm:num_requests_waiting", 0):
        problems.append("running/waiting gauges not 0")
    return Check("healthy-after", not problems, "; ".join(problems) or "/health, /ready, a chat: all 200")


async def capacity_after(http: httpx.AsyncClient, cfg: StressConfig) -> Check:
    capacity = cfg.max_num_seqs + cfg.max_queued
    spec = RequestSpec("completion", "/v1/completions", {"prompt": "Hello", "max_tokens": 1})
    outcomes = await asyncio.gather(*(send(http, spec) for _ in range(capacity)))
    ok = sum(1 for o, _ in outcomes if o.status == 200 and o.problem is None)
    others = Counter(str(o.status) for o, _ in outcomes if o.status != 200)
    return Check(
        "capacity-after",
        ok == capacity,
        f"{ok}/{capacity} simultaneous requests admitted once idle"
        + (f" (others: {dict(others)})" if others else ""),
    )


def metrics_check(waves: list[WaveReport]) -> Check:
    problems = []
    for w in waves:
        if not w.metric_deltas:  # the run stopped during this wave: nothing to compare
            continue
        d = w.metric_deltas
        rejected = d.get(METRICS_COMPARED[0], 0.0)
        finished = d.get(METRICS_COMPARED[1], 0.0) + d.get(METRICS_COMPARED[2], 0.0)
        others = sum(d.get(k, 0.0) for k in METRICS_COMPARED[3:])
        if rejected != w.rejected_answers:
            problems.append(f"{w.name}: rejected_total +{rejected:g}, clients got {w.rejected_answers} 429s")
        if finished != w.ok_sequences:
            problems.append(
                f"{w.name}: success(stop+length) +{finished:g}, clients got {w.ok_sequences} choices"
            )
        if others:
            problems.append(f"{w.name}: {others:g} sequences finished as abort/error/timeout")
    return Check(
        "metrics-agree", not problems, "; ".join(problems) or "rejections and finished sequences match"
    )


def log_check(server: Server) -> Check:
    bad = [
        line
        for line in server.log().splitlines()
        if " ERROR " in line or line.startswith(("ERROR", "Traceback"))
    ]
    return Check(
        "no-error-logs", not bad, f"{len(bad)} ERROR/traceback line(s)" + (f": {bad[0][:300]}" if bad else "")
    )


async def drive(server: Server, cfg: StressConfig, report: StressReport) -> None:
    limits = httpx.Limits(max_connections=cfg.concurrency + 8, max_keepalive_connections=cfg.concurrency + 8)
    timeout = httpx.Timeout(cfg.request_timeout_s, connect=30.0)
    async with httpx.AsyncClient(base_url=server.url, timeout=timeout, limits=limits) as http:
        start = time.monotonic()
        await warm_up(http, cfg)
        report.rss_warm_kb = server.rss_kb()
        report.prefix_cache_warm_kb = prefix_cache_kb(await scrape(http))
        print(
            f"warmed up in {time.monotonic() - start:.1f}s: VmRSS {report.rss_warm_kb / 1024:.1f} MiB",
            flush=True,
        )
        for i in range(cfg.waves):
            wave = WaveReport(f"wave{i + 1}")
            report.waves.append(wave)
            specs = make_requests(cfg.requests, seed=cfg.seed, cfg=cfg)  # identical waves
            before = await scrape(http)
            start = time.monotonic()
            outcomes: list[Outcome] = []
            ticker = asyncio.create_task(progress(http, wave.name, outcomes, len(specs), before))
            try:
                await run_wave(http, specs, cfg.concurrency, outcomes, cfg.retries)
            finally:  # cut short by the deadline too: report what was answered
                ticker.cancel()
                wave.wall_s = time.monotonic() - start
                summarize_wave(wave, outcomes)
            await wait_idle(http)
            wave.rss_kb = server.rss_kb()
            after = await scrape(http)
            wave.prefix_cache_kb = prefix_cache_kb(after)
            wave.metric_deltas = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in METRICS_COMPARED}
            print(
                f"{wave.name}: {wave.wall_s:.1f}s {wave.statuses} VmRSS {wave.rss_kb / 1024:.1f} MiB "
                f"(host-RAM prefix cache {wave.prefix_cache_kb / 1024:.1f} MiB)",
                flush=True,
            )
        report.checks.append(await health_after(http))
        report.checks.append(await capacity_after(http, cfg))


def final_checks(report: StressReport, cfg: StressConfig) -> list[Check]:
    checks = []
    total = sum(sum(v for k, v in w.statuses.items() if k != "malformed") for w in report.waves)
    good = sum(
        w.statuses.get("200", 0) + w.statuses.get("429", 0) - w.statuses.get("malformed", 0)
        for w in report.waves
    )
    checks.append(
        Check(
            "answers",
            total == cfg.requests * cfg.waves and good == total,
            f"{good}/{total} requests answered 200 (well-formed) or 429 (Retry-After); "
            f"{report.total('malformed')} malformed; {cfg.requests * cfg.waves - total} not answered",
        )
    )
    other = sum(
        v
        for w in report.waves
        for k, v in w.statuses.items()
        if k not in ("200", "429", "transport", "malformed")
    )
    checks.append(Check("no-other-status", other == 0, f"{other} other 4xx/5xx"))
    checks.append(
        Check("no-transport-err", report.total("transport") == 0, f"{report.total('transport')} errors")
    )
    checks.append(metrics_check(report.waves))
    for w in report.waves:
        if w.rss_kb is None or report.rss_warm_kb is None:
            checks.append(Check(f"rss-{w.name}", False, "not measured (the run stopped first)"))
            continue
        # The host-RAM prefix cache grows towards its bound by design; what else grows is a leak.
        ratio = (w.rss_kb - w.prefix_cache_kb) / (report.rss_warm_kb - report.prefix_cache_warm_kb)
        detail = (
            f"{w.rss_kb / 1024:.1f} MiB, {w.prefix_cache_kb / 1024:.1f} MiB of it the host-RAM prefix cache; "
            f"without it {ratio:.3f} x warm-up (limit {RSS_RATIO})"
        )
        checks.append(Check(f"rss-{w.name}", ratio <= RSS_RATIO, detail))
    return checks


def run_stress(cfg: StressConfig, log_dir: Path | None = None) -> StressReport:
    """Start a server, warm it up, run the waves, check; always stops the server. Never raises for a
    failed check or a dead server: those are in the report."""
    report = StressReport(config=asdict(cfg))
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llmhost-stress-") as tmp:
        try:
            with running_server(cfg, log_dir or Path(tmp)) as server:
                report.server_pid = server.process.pid
                print(f"server {server.url} pid {server.process.pid}, log {server.log_path}", flush=True)
                try:
                    left = cfg.deadline_s - (time.monotonic() - start)  # start-up counts too
                    asyncio.run(asyncio.wait_for(drive(server, cfg, report), timeout=max(left, 1.0)))
                except TimeoutError:
                    report.deadline_hit = True
                    report.fatal = f"global deadline of {cfg.deadline_s:.0f}s reached"
                except Exception as exc:  # anything that stops the run is reported, not raised
                    report.fatal = f"{type(exc).__name__}: {exc}"
                if server.process.poll() is not None:
                    report.fatal = (report.fatal or "") + f" server exited with {server.process.returncode}"
                report.checks = final_checks(report, cfg) + report.checks
            # Read once the server has stopped: lines logged while it noticed the clients leave, or while
            # it shut down, count too.
            report.checks.append(log_check(server))
        except RuntimeError as exc:  # the server did not start
            report.fatal = str(exc)
    report.checks.append(
        Check(
            "deadline", not report.deadline_hit, f"{time.monotonic() - start:.0f}s of {cfg.deadline_s:.0f}s"
        )
    )
    if report.fatal:
        report.checks.append(Check("run-completed", False, report.fatal[:2000]))
    report.wall_s = time.monotonic() - start
    return report


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def print_summary(report: StressReport) -> None:
    cfg = report.config
    print()
    print(
        f"stress: {cfg['waves']} wave(s) x {cfg['requests']} requests, concurrency {cfg['concurrency']}, "
        f"--max-num-seqs {cfg['max_num_seqs']} --max-queued-requests {cfg['max_queued']} "
        f"--max-model-len {cfg['max_model_len']}, {report.wall_s:.0f}s in all"
    )
    warm = report.rss_warm_kb
    print(f"  VmRSS after warm-up: {'-' if warm is None else f'{warm / 1024:.1f} MiB'}")
    previous = warm
    for w in report.waves:
        print(f"  {w.name}: {w.wall_s:.1f}s  statuses {w.statuses}  kinds {w.by_kind}")
        print(
            f"    200 latency p50 {fmt_s(w.latency_ok_p50_s)} p99 {fmt_s(w.latency_ok_p99_s)};"
            f" 429 latency p50 {fmt_s(w.latency_429_p50_s)}; {w.ok_sequences} choices answered,"
            f" {w.rejected_answers} 429 answers in all (retries included)"
        )
        if w.rss_kb is not None and warm and previous:
            print(
                f"    VmRSS once idle: {w.rss_kb / 1024:.1f} MiB = {w.rss_kb / warm:.3f} x warm-up, "
                f"{(w.rss_kb - previous) / 1024:+.1f} MiB since the previous measurement"
            )
            previous = w.rss_kb
        for problem in w.problems:
            print(f"    problem: {problem}")
    print("checks:")
    for c in report.checks:
        print(f"  {'PASS' if c.passed else 'FAIL'}  {c.name:<17} {c.detail}")
    print("RESULT:", "PASS" if report.passed else "FAIL")


def parse_args(argv: list[str] | None = None) -> tuple[StressConfig, str | None, str | None]:
    d = StressConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=d.requests, help="requests per wave")
    p.add_argument("--concurrency", type=int, default=d.concurrency, help="requests in flight at once")
    p.add_argument("--max-queued", type=int, default=d.max_queued, help="the server's --max-queued-requests")
    p.add_argument("--max-num-seqs", type=int, default=d.max_num_seqs)
    p.add_argument("--max-model-len", type=int, default=d.max_model_len)
    p.add_argument("--waves", type=int, default=d.waves, help="identical waves (2 tells growth from leaks)")
    p.add_argument("--deadline", type=float, default=d.deadline_s, help="global time limit, seconds")
    p.add_argument("--threads", type=int, default=d.threads, help="the server's --threads (0: its default)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--retries", type=int, default=d.retries, help="send a request again after a 429, at most N times"
    )
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON here")
    p.add_argument("--keep-log", metavar="DIR", help="keep the server log in this folder")
    a = p.parse_args(argv)
    cfg = StressConfig(
        requests=a.requests,
        concurrency=a.concurrency,
        waves=a.waves,
        max_num_seqs=a.max_num_seqs,
        max_queued=a.max_queued,
        max_model_len=a.max_model_len,
        deadline_s=a.deadline,
        seed=a.seed,
        threads=a.threads,
        retries=a.retries,
    )
    return cfg, a.json, a.keep_log


def main(argv: list[str] | None = None) -> int:
    cfg, json_path, log_dir = parse_args(argv)
    report = run_stress(cfg, Path(log_dir) if log_dir else None)
    print_summary(report)
    if json_path:
        Path(json_path).write_text(json.dumps({"passed": report.passed, **asdict(report)}, indent=2))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
