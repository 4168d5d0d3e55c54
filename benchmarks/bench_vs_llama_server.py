"""llmhost against native llama.cpp `llama-server` (the same llama.cpp, built by `make llama-server`).

Three contenders, each started alone on a free loopback port, on the same model (default: the embedded
SmolLM2-135M-Instruct GGUF), with the same threads (2), 8 sequences of 8192 tokens each and flash
attention on; at most one server is alive at a time and none while the raw numbers are measured:

  llmhost              `llmhost serve --threads 2 --max-num-seqs 8 --max-model-len 8192` (+ --llmhost-args)
  llama-server         `llama-server -t 2 -np 8 -c 65536 -fa on --metrics -no-kvu`: 8 slots, each its own
                       8192-token KV region.
  llama-server -kvu    the same with `-kvu`: one KV buffer shared by all slots.

Workloads (closed loop: each client sends its next request when the previous one finished; streaming
/v1/completions unless said otherwise; temperature 0; `ignore_eos`, which both servers accept, so that
every request runs to its max_tokens):

  single      1 client, 64 tokens per request, one request after another. Decode speed of one stream:
              what an interactive user sees. -> tokens/s.
  staggered   8 clients, each request's max_tokens drawn from 16..112 (seeded, the same sequence for
              every contender). Requests start and end at different times, so the batch keeps changing:
              this is what continuous batching is for. -> aggregate tokens/s.
  shared      8 clients; every prompt is one fixed ~700-token instruction block + a short unique item,
              4 tokens out. Prefill dominates, and a server that reuses the block's KV computes only the
              item. -> the first (cold) round of 8 concurrent requests on a fresh server, wall seconds;
              then, after one warm round, steady-state requests/s; prompt tokens computed per request
              (from /metrics).
  multiturn   /v1/chat/completions: one conversation growing turn by turn (a ~30-token user message,
              32 tokens answered, 10 turns; 5 with --quick), then (not with --quick) 4 such
              conversations in parallel. A server that keeps the conversation's KV computes only the new
              turn. -> wall seconds, per-turn prompt tokens and prompt tokens actually computed: llmhost
              from `usage.prompt_tokens_details.cached_tokens`, llama-server from its `timings`
              (`prompt_n` computed, `cache_n` reused); "n/a" where a server does not say.
  rollouts    16 agent trajectories at once on the 8 slots (an RL rollout, a code-agent evaluation): each
              starts with its own ~300-token task and runs 5 turns (24 tokens answered, then a ~40-token
              tool observation). Twice as many trajectories as slots, so a trajectory's next turn often
              finds its slot taken: a server that keeps evicted transcripts in host RAM (llmhost
              --prefix-cache-ram-mb, llama-server --cache-ram, both on by default) restores them instead
              of computing them again. 3 trajectories x 3 turns with --quick. -> wall seconds, prompt
              tokens computed.
  n4          one /v1/completions request (not streamed) with n=4 on a ~300-token prompt, 32 tokens
              each, temperature 1. The prompt should be computed once, not 4 times. -> wall seconds,
              prompt tokens computed from /metrics (llmhost: `vllm:prefix_cache_queries_total` minus
              `vllm:prefix_cache_hits_total`; llama-server: `llamacpp:prompt_tokens_total`); if a server
              rejects `n`, 4 concurrent identical requests are sent instead and the table says so.

The machine's limits, measured first with the built binaries and no server running (`raw` workload):
`llama-bench -t 2 -p 512 -n 0 -fa 1` (prefill tokens/s) and `llama-batched-bench -t 2 -c 4096 -npp 128
-ntg 64 -npl 1,8 -fa on` (S_TG: decode tokens/s of 1 and of 8 sequences together).

The table shows every number for each contender and the ratio llmhost / best llama-server, as a speed:
above 1 means llmhost is faster (for seconds, the ratio is best llama-server seconds / llmhost seconds).
Under it, llmhost's and each llama-server's rates against the raw limits. llama.cpp's threads spin, so
other work on a 2-core box skews a phase several-fold: before each phase the script waits (up to 10 s)
for the CPUs to go quiet, and marks with `*` a measurement during which other processes used more than
10% of the CPUs. Read ratios, not absolute numbers, and rerun before trusting a surprise.

Run:  make llama-server   # once: builds .llama-server/bin (about 10-15 minutes on 2 cores)
      .venv/bin/python benchmarks/bench_vs_llama_server.py [--quick] [--json OUT] [--only shared,n4]
                                                          [--llmhost-args "--max-num-batched-tokens 1024"]
Exit 0 when it measured, 2 when the llama.cpp binaries are missing, 1 when a server failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import (  # noqa: E402  (a sibling script, not a package)
    BUSY_WARN,
    HOST,
    PROMPTS,
    default_model_path,
    free_port,
    log_tail,
    machine_jiffies,
    others_cpu,
    parse_sse_data,
    stop,
    wait_for_quiet_cpus,
    wait_ready,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BIN_DIR = ROOT / ".llama-server" / "bin"
THREADS = 2
SLOTS = 8
CTX_PER_SLOT = 8192
REQUEST_TIMEOUT_S = 600.0
WORKLOADS = ("raw", "single", "staggered", "shared", "multiturn", "rollouts", "n4")
CONTENDERS = ("llmhost", "llmhost-kvu", "llama-server", "llama-server-kvu")
OURS = ("llmhost", "llmhost-kvu")  # the rest are the anchors llmhost is compared with
SEED = 1234
RULE_TOPICS = (  # 17 rules: with the header and an item, a prompt of ~705 SmolLM2 tokens
    "order numbers; shipping addresses; refund requests; damaged parcels; late deliveries; payment failures; "
    "gift cards; loyalty points; account deletion; password resets; warranty claims; invoices; "
    "returns abroad; price matching; subscriptions; missing items; anything else"
).split("; ")
TOPICS = ["the ocean", "volcanoes", "bees", "the moon", "trains", "chess", "rain forests", "bread"]


# ----------------------------------------------------------------------------- prompts


def instruction_block() -> str:
    """A fixed ~700-token instruction block (the same bytes for every request and contender)."""
    rules = [
        f"{i + 1}. When the message is about {topic}, read it twice, decide which team owns it, answer "
        f"with that team's name only, and never add any other words or punctuation."
        for i, topic in enumerate(RULE_TOPICS)
    ]
    return (
        "You are the routing assistant of a large online shop. Classify each customer message below "
        "into exactly one team. Follow these rules in order:\n" + "\n".join(rules) + "\n\nMessage: "
    )


def shared_item(i: int) -> str:
    return f"ticket {i}: my {TOPICS[i % len(TOPICS)]} order #{1000 + i} needs help.\nTeam:"


def long_prompt(rep: int) -> str:
    """~300 tokens, different from its first token on for every `rep` (so nothing is reused)."""
    sentences = [
        f"Report {rep}, paragraph {j}: the committee reviewed {TOPICS[(rep + j) % len(TOPICS)]} and "
        f"agreed on {j + 3} follow-up actions before the next meeting."
        for j in range(12)
    ]
    return " ".join(sentences) + "\nSummary:"


def user_turn(conv: int, turn: int) -> str:
    """~30 tokens."""
    topic = TOPICS[(conv + turn) % len(TOPICS)]
    return (
        f"Conversation {conv}, question {turn + 1}: tell me one more surprising fact about {topic}, "
        f"in plain words, and keep it short so that we can go on talking."
    )


# ----------------------------------------------------------------------------- configuration


@dataclass
class Sizes:
    single_requests: int
    staggered_per_client: int
    shared_per_client: int
    turns: int
    parallel_conversations: int  # 0: skip the parallel part
    rollouts: int  # trajectories at once
    rollout_turns: int
    n4_reps: int


QUICK = Sizes(
    single_requests=3,
    staggered_per_client=3,
    shared_per_client=3,
    turns=5,
    parallel_conversations=0,
    rollouts=3,
    rollout_turns=3,
    n4_reps=1,
)
FULL = Sizes(
    single_requests=10,
    staggered_per_client=12,
    shared_per_client=10,
    turns=10,
    parallel_conversations=4,
    rollouts=16,
    rollout_turns=5,
    n4_reps=3,
)


@dataclass
class Config:
    model: str
    bin_dir: Path
    quick: bool
    sizes: Sizes
    only: tuple[str, ...]
    contenders: tuple[str, ...]
    llmhost_args: list[str]
    json_path: str | None
    quiet_wait: float
    rounds: int


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="GGUF file (default: the embedded SmolLM2-135M)")
    p.add_argument("--quick", action="store_true", help="short workloads: a smoke run of about 2.5 minutes")
    p.add_argument("--json", dest="json_path", default=None, help="write all numbers to this file")
    p.add_argument("--only", default=None, help=f"comma-separated workloads among {','.join(WORKLOADS)}")
    p.add_argument(
        "--contenders", default=None, help=f"comma-separated, among {','.join(CONTENDERS)} (default all)"
    )
    p.add_argument("--llmhost-args", default="", help='extra `llmhost serve` flags, e.g. "--max-n 8"')
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="most seconds to wait before each phase for other work to leave the CPUs (default 30)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run everything this many times, contenders in a rotated order each round, and report the "
        "medians (the box drifts by more than the margins between runs; 3 takes three times as long)",
    )
    p.add_argument(
        "--bin-dir", default=str(DEFAULT_BIN_DIR), help="folder with llama-server, llama-bench, ..."
    )
    a = p.parse_args(argv)
    only = tuple(a.only.split(",")) if a.only else WORKLOADS
    contenders = tuple(a.contenders.split(",")) if a.contenders else CONTENDERS
    if unknown := [w for w in only if w not in WORKLOADS]:
        p.error(f"unknown workload(s) {unknown}; choose among {WORKLOADS}")
    if unknown := [c for c in contenders if c not in CONTENDERS]:
        p.error(f"unknown contender(s) {unknown}; choose among {CONTENDERS}")
    if a.rounds < 1:
        p.error("--rounds must be at least 1")
    model = a.model or default_model_path()
    if not os.path.isfile(model):
        sys.exit(f"model file not found: {model}")
    return Config(
        model=model,
        bin_dir=Path(a.bin_dir),
        quick=a.quick,
        sizes=QUICK if a.quick else FULL,
        only=only,
        contenders=contenders,
        llmhost_args=shlex.split(a.llmhost_args),
        json_path=a.json_path,
        quiet_wait=a.quiet_wait,
        rounds=a.rounds,
    )


def missing_binaries(cfg: Config) -> list[str]:
    names = ["llama-server", "llama-bench", "llama-batched-bench"]
    return [n for n in names if not os.access(cfg.bin_dir / n, os.X_OK)]


# ----------------------------------------------------------------------------- contenders


@dataclass
class Contender:
    key: str
    label: str
    command: Callable[[int], list[str]]
    kind: str  # "llmhost" or "llama": where its counters and per-request cache numbers come from


def llmhost_argv(cfg: Config, port: int, *extra: str) -> list[str]:
    exe = Path(sys.executable).parent / "llmhost"
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "llmhost"]
    flags = f"--host {HOST} --port {port} --threads {THREADS} --max-num-seqs {SLOTS}"
    flags += f" --max-model-len {CTX_PER_SLOT} --flash-attn --log-level warning"
    return [*head, "serve", "--model", cfg.model, *flags.split(), *extra, *cfg.llmhost_args]


def llama_server_argv(cfg: Config, port: int, unified: bool) -> list[str]:
    flags = f"--host {HOST} --port {port} -t {THREADS} -tb {THREADS} -np {SLOTS} -c {SLOTS * CTX_PER_SLOT}"
    kvu = "-kvu" if unified else "-no-kvu"
    return [str(cfg.bin_dir / "llama-server"), "-m", cfg.model, *flags.split(), "-fa", "on", "--metrics", kvu]


def contenders(cfg: Config) -> list[Contender]:
    every = [
        Contender("llmhost", "llmhost", lambda port: llmhost_argv(cfg, port), "llmhost"),
        Contender(
            "llmhost-kvu",
            "llmhost --kv-unified",
            lambda port: llmhost_argv(cfg, port, "--kv-unified"),
            "llmhost",
        ),
        Contender("llama-server", "llama-server", lambda port: llama_server_argv(cfg, port, False), "llama"),
        Contender(
            "llama-server-kvu", "llama-server -kvu", lambda port: llama_server_argv(cfg, port, True), "llama"
        ),
    ]
    return [c for c in every if c.key in cfg.contenders]


@dataclass
class Server:
    base: str
    pid: int
    kind: str


@contextmanager
def running(contender: Contender) -> Iterator[Server]:
    port = free_port()
    base = f"http://{HOST}:{port}"
    log = tempfile.NamedTemporaryFile("w+", prefix=f"bench-{contender.key}-", suffix=".log", delete=False)
    with log:
        proc = subprocess.Popen(
            contender.command(port), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        waited = wait_ready(proc, base + "/health", log.name)
        print(
            f"  {contender.label} ready on port {port} after {waited:.1f}s (pid {proc.pid}, log {log.name})"
        )
        yield Server(base, proc.pid, contender.kind)
    except (RuntimeError, httpx.HTTPError) as exc:
        try:
            proc.wait(timeout=3)  # a server that was signalled may still be cleaning up
        except subprocess.TimeoutExpired:
            raise exc from None
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"status {proc.returncode}"
        raise RuntimeError(
            f"{contender.label} (pid {proc.pid}) exited mid-run with {how} ({exc}); log {log.name}:\n"
            + log_tail(log.name, 8)
        ) from exc
    finally:
        stop(proc)
    os.unlink(log.name)  # kept when the server failed


# ----------------------------------------------------------------------------- HTTP clients


@dataclass
class Reply:
    tokens: int = 0  # completion tokens (usage if the server sent it, else content chunks)
    text: str = ""
    usage: dict | None = None
    timings: dict | None = None
    seconds: float = 0.0
    chunks: int = 0  # content chunks (a chunk can carry more than one token)

    @property
    def prompt_tokens(self) -> int | None:
        return (self.usage or {}).get("prompt_tokens")

    @property
    def computed(self) -> int | None:
        """Prompt tokens the server computed for this request (not reused from its cache), if it says."""
        if self.timings and "prompt_n" in self.timings:  # llama-server
            return self.timings["prompt_n"]
        cached = ((self.usage or {}).get("prompt_tokens_details") or {}).get("cached_tokens")
        if cached is None or self.prompt_tokens is None:
            return None
        return self.prompt_tokens - cached


def new_client() -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=4 * SLOTS, max_keepalive_connections=4 * SLOTS)
    return httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits)


RESENT = [0]  # requests sent again by post()


async def post(client: httpx.AsyncClient, url: str, body: dict, stream: bool = False) -> httpx.Response:
    """POST, sent again once if the server closed the kept-alive connection before answering.

    llama-server's HTTP server now and then closes a kept-alive connection just as the next request goes out
    on it (httpx: "Server disconnected without sending a response"); that request never reached it.
    """
    try:
        return await client.send(client.build_request("POST", url, json=body), stream=stream)
    except httpx.RemoteProtocolError:
        RESENT[0] += 1
        return await client.send(client.build_request("POST", url, json=body), stream=stream)


async def stream(client: httpx.AsyncClient, url: str, body: dict, seen: list[int] | None = None) -> Reply:
    """One streaming request to /v1/completions or /v1/chat/completions; `seen[0]` (if given) counts the
    content chunks as they arrive."""
    body = body | {"stream": True, "stream_options": {"include_usage": True}}
    reply, chunks, parts = Reply(), 0, []
    start = time.perf_counter()
    resp = await post(client, url, body, stream=True)
    try:
        if resp.status_code != 200:
            detail = (await resp.aread()).decode(errors="replace")
            raise RuntimeError(f"{url} -> {resp.status_code}: {detail[:500]}")
        async for line in resp.aiter_lines():
            event = parse_sse_data(line)
            if event is None:
                continue
            reply.usage = event.get("usage") or reply.usage
            reply.timings = event.get("timings") or reply.timings
            for choice in event.get("choices") or []:
                piece = choice.get("text") or (choice.get("delta") or {}).get("content")
                if piece:
                    chunks += 1
                    parts.append(piece)
                    if seen is not None:
                        seen[0] += 1
    finally:
        await resp.aclose()
    reply.seconds = time.perf_counter() - start
    reply.text = "".join(parts)
    reply.chunks = chunks
    usage_tokens = (reply.usage or {}).get("completion_tokens")
    reply.tokens = usage_tokens if usage_tokens is not None else chunks
    return reply


def completion(prompt: str, max_tokens: int, **extra) -> dict:
    return {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True} | extra


async def fetch_metrics(client: httpx.AsyncClient, server: Server) -> str | None:
    try:
        resp = await client.get(server.base + "/metrics")
    except httpx.HTTPError:
        return None
    return resp.text if resp.status_code == 200 else None


def metric_sum(text: str, name: str) -> float | None:
    """Sum of every sample of `name` (any labels) in Prometheus text; None when absent."""
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})?\s+([0-9.eE+-]+)\s*$", re.M)
    values = [float(m) for m in pattern.findall(text)]
    return sum(values) if values else None


async def prompt_counters(client: httpx.AsyncClient, server: Server) -> tuple[float, float] | None:
    """(prompt tokens computed, prompt tokens reused) so far, from /metrics; None when not exposed."""
    text = await fetch_metrics(client, server)
    if text is None:
        return None
    if server.kind == "llama":
        computed = metric_sum(text, "llamacpp:prompt_tokens_total")
        reused = metric_sum(text, "llamacpp:prompt_tokens_cached_total")
        return None if computed is None else (computed, reused or 0.0)
    queries = metric_sum(text, "vllm:prefix_cache_queries_total")
    hits = metric_sum(text, "vllm:prefix_cache_hits_total")
    return None if queries is None or hits is None else (queries - hits, hits)


async def settle_counters(client: httpx.AsyncClient, server: Server) -> tuple[float, float] | None:
    """Counters after the last request: llama-server updates them a moment after the response."""
    await asyncio.sleep(0.2)
    return await prompt_counters(client, server)


def counter_delta(before, after, index: int = 0) -> float | None:
    return None if before is None or after is None else after[index] - before[index]


# ----------------------------------------------------------------------------- workloads


Results = dict[str, float | str | list | None]


async def run_single(server: Server, sizes: Sizes) -> Results:
    async with new_client() as client:
        url = server.base + "/v1/completions"
        tokens, start = 0, time.perf_counter()
        for i in range(sizes.single_requests):
            tokens += (await stream(client, url, completion(PROMPTS[i % len(PROMPTS)], 64))).tokens
        elapsed = time.perf_counter() - start
    want = 64 * sizes.single_requests
    note = None if tokens == want else f"{tokens} of {want} tokens"
    return {"single_tok_s": tokens / elapsed, "single_note": note}


async def run_staggered(server: Server, sizes: Sizes) -> Results:
    """Two rates: over the whole run (it ends with a drain, the clients with the most tokens left running
    alone), and while all 8 clients are active (from the start until the first one has sent its last
    request and got the answer): the rate to hold against raw decode of 8 sequences."""
    seen = [0]  # content chunks received so far, by every client
    window: list[tuple[float, int]] = []  # (seconds, chunks) when the first client finished its list

    async def client_loop(client: httpx.AsyncClient, c: int) -> tuple[int, int, int]:
        rng = random.Random(SEED + c)
        got = want = chunks = 0
        for i in range(sizes.staggered_per_client):
            n = rng.randint(16, 112)
            prompt = PROMPTS[(c + i) % len(PROMPTS)]
            reply = await stream(client, server.base + "/v1/completions", completion(prompt, n), seen)
            got, want, chunks = got + reply.tokens, want + n, chunks + reply.chunks
        if not window:
            window.append((time.perf_counter() - start, seen[0]))
        return got, want, chunks

    async with new_client() as client:
        start = time.perf_counter()
        counts = await asyncio.gather(*(client_loop(client, c) for c in range(SLOTS)))
        elapsed = time.perf_counter() - start
    got, want, chunks = (sum(c[i] for c in counts) for i in range(3))
    # Tokens in the window: chunks counted as they came, scaled by the run's tokens per chunk (llmhost
    # holds an incomplete UTF-8 character back and sends it with the next token).
    window_s, window_chunks = window[0]
    steady = window_chunks * (got / chunks) / window_s if chunks and window_s > 0 else None
    return {
        "staggered_tok_s": got / elapsed,
        "staggered_steady_tok_s": steady,
        "staggered_note": None if got == want else f"{got}/{want} tok",
    }


async def run_shared(server: Server, sizes: Sizes) -> Results:
    block, url = instruction_block(), server.base + "/v1/completions"
    next_item = iter(range(10**6))

    async def one(client: httpx.AsyncClient) -> Reply:
        return await stream(client, url, completion(block + shared_item(next(next_item)), 4))

    async with new_client() as client:
        start = time.perf_counter()
        cold = await asyncio.gather(*(one(client) for _ in range(SLOTS)))
        cold_s = time.perf_counter() - start
        await asyncio.gather(*(one(client) for _ in range(SLOTS)))  # warm round
        before = await settle_counters(client, server)

        async def client_loop() -> None:
            for _ in range(sizes.shared_per_client):
                await one(client)

        start = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(SLOTS)))
        steady_s = time.perf_counter() - start
        after = await settle_counters(client, server)
    n = SLOTS * sizes.shared_per_client
    computed = counter_delta(before, after)
    return {
        "shared_req_s": n / steady_s,
        "shared_cold_s": cold_s,
        "shared_prompt_tokens": cold[0].prompt_tokens,
        "shared_computed_per_req": None if computed is None else computed / n,
    }


async def conversation(client: httpx.AsyncClient, server: Server, conv: int, turns: int) -> list[Reply]:
    messages = [{"role": "system", "content": "You are a friendly assistant who answers briefly."}]
    replies = []
    for turn in range(turns):
        messages.append({"role": "user", "content": user_turn(conv, turn)})
        body = {"messages": messages, "max_tokens": 32, "temperature": 0.0, "ignore_eos": True}
        reply = await stream(client, server.base + "/v1/chat/completions", body)
        messages.append({"role": "assistant", "content": reply.text})
        replies.append(reply)
    return replies


def turn_numbers(replies: list[Reply]) -> tuple[list, list]:
    prompt = [r.prompt_tokens for r in replies]
    computed = [r.computed for r in replies]
    return prompt, computed


def sum_or_none(values: list) -> int | None:
    return None if not values or any(v is None for v in values) else sum(values)


async def run_multiturn(server: Server, sizes: Sizes) -> Results:
    out: Results = {}
    async with new_client() as client:
        start = time.perf_counter()
        replies = await conversation(client, server, 0, sizes.turns)
        out["multiturn_s"] = time.perf_counter() - start
        prompt, computed = turn_numbers(replies)
        out |= {
            "multiturn_prompt_per_turn": prompt,
            "multiturn_computed_per_turn": computed,
            "multiturn_prompt": sum_or_none(prompt),
            "multiturn_computed": sum_or_none(computed),
        }
        if sizes.parallel_conversations:
            k, turns = sizes.parallel_conversations, sizes.turns
            start = time.perf_counter()
            convs = await asyncio.gather(*(conversation(client, server, c + 1, turns) for c in range(k)))
            out["multiturn_par_s"] = time.perf_counter() - start
            out["multiturn_par_computed"] = sum_or_none([v for r in convs for v in turn_numbers(r)[1]])
            out["multiturn_par_prompt"] = sum_or_none([v for r in convs for v in turn_numbers(r)[0]])
    return out


def observation(conv: int, turn: int) -> str:
    """~40 tokens of tool output."""
    return (
        f"[tool output {conv}.{turn}] exit code 0; stdout: checked {turn + 3} files, found "
        f"{(conv * 7 + turn) % 5} warnings about {TOPICS[(conv + turn) % len(TOPICS)]}; next step?"
    )


async def trajectory(client: httpx.AsyncClient, server: Server, conv: int, turns: int) -> list[Reply]:
    messages = [{"role": "user", "content": long_prompt(100 + conv)}]
    replies = []
    for turn in range(turns):
        body = {"messages": messages, "max_tokens": 24, "temperature": 0.0, "ignore_eos": True}
        reply = await stream(client, server.base + "/v1/chat/completions", body)
        messages += [
            {"role": "assistant", "content": reply.text},
            {"role": "user", "content": observation(conv, turn)},
        ]
        replies.append(reply)
    return replies


async def run_rollouts(server: Server, sizes: Sizes) -> Results:
    async with new_client() as client:
        start = time.perf_counter()
        runs = await asyncio.gather(
            *(trajectory(client, server, c, sizes.rollout_turns) for c in range(sizes.rollouts))
        )
        elapsed = time.perf_counter() - start
    replies = [r for run in runs for r in run]
    return {
        "rollouts_s": elapsed,
        "rollouts_prompt": sum_or_none([r.prompt_tokens for r in replies]),
        "rollouts_computed": sum_or_none([r.computed for r in replies]),
    }


async def n4_once(client: httpx.AsyncClient, server: Server, rep: int) -> tuple[float, int | None, str]:
    """-> (seconds, prompt tokens computed (from /metrics), how it was sent)."""
    url = server.base + "/v1/completions"
    body = completion(long_prompt(rep), 32, temperature=1.0, seed=SEED + rep)
    before = await prompt_counters(client, server)
    start = time.perf_counter()
    resp = await post(client, url, body | {"n": 4})
    how = "n=4"
    if resp.status_code != 200 or len(resp.json().get("choices") or []) != 4:
        how = f"4 concurrent requests (n=4 -> {resp.status_code})"
        start = time.perf_counter()
        replies = await asyncio.gather(*(post(client, url, body) for _ in range(4)))
        if bad := [r for r in replies if r.status_code != 200]:
            raise RuntimeError(f"{url} -> {bad[0].status_code}: {bad[0].text[:300]}")
    elapsed = time.perf_counter() - start
    computed = counter_delta(before, await settle_counters(client, server))
    return elapsed, None if computed is None else int(computed), how


async def run_n4(server: Server, sizes: Sizes) -> Results:
    async with new_client() as client:
        runs = [await n4_once(client, server, rep) for rep in range(sizes.n4_reps)]
    computed = [c for _, c, _ in runs]
    return {
        "n4_s": statistics.median(s for s, _, _ in runs),
        "n4_computed": None if None in computed else statistics.median(computed),
        "n4_how": runs[0][2],
    }


SERVER_WORKLOADS: dict[str, Callable[[Server, Sizes], object]] = {
    "single": run_single,
    "staggered": run_staggered,
    "shared": run_shared,  # first use of the instruction block on each fresh server: its cold round is cold
    "multiturn": run_multiturn,
    "rollouts": run_rollouts,
    "n4": run_n4,
}


async def warm_up(server: Server) -> None:
    async with new_client() as client:
        await stream(client, server.base + "/v1/completions", completion("Hello there,", 8))


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process (VmRSS), MiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError):
        return None
    return round(kib / 1024, 1)


def bench_contender(cfg: Config, contender: Contender) -> dict:
    results: dict = {}
    resent_before = RESENT[0]
    wait_for_quiet_cpus(cfg.quiet_wait)
    with running(contender) as server:
        asyncio.run(warm_up(server))
        results["rss_idle_mib"] = rss_mib(server.pid)
        for name, workload in SERVER_WORKLOADS.items():
            if name not in cfg.only:
                continue
            wait_for_quiet_cpus(cfg.quiet_wait)
            start = time.monotonic()
            with others_cpu([os.getpid(), server.pid]) as others:
                got = asyncio.run(workload(server, cfg.sizes))
            share = others[0] if others else None
            results |= got | {f"{name}_others_cpu": share}
            shown = ", ".join(
                f"{k}={fmt(v)}" for k, v in got.items() if v is not None and not isinstance(v, list)
            )
            mark = f"  * other processes used {share:.0%} of the CPUs" if share and share > BUSY_WARN else ""
            print(f"  {name:<10} {time.monotonic() - start:5.1f}s  {shown}{mark}")
        # Memory must not grow with traffic: the KV cache is allocated at start, and cached prefixes live
        # in it (no host-RAM cache), so RSS after the mixed workloads should stay near RSS at idle.
        results["rss_after_mib"] = rss_mib(server.pid)
    if resent := RESENT[0] - resent_before:
        print(f"  {resent} request(s) sent again: the server closed a kept-alive connection before answering")
        results["resent_requests"] = resent
    return results


# ----------------------------------------------------------------------------- raw limits (llama.cpp tools)


def run_tool(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=REQUEST_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {proc.returncode}:\n{proc.stderr[-2000:]}")
    return proc.stdout + "\n" + proc.stderr


@contextmanager
def others_cpu_around_children() -> Iterator[list[float]]:
    """Like bench_core.others_cpu, for a tool run to its end as our child (its CPU time is in os.times())."""
    out: list[float] = []
    hz = os.sysconf("SC_CLK_TCK")
    own = lambda: sum(os.times()[:4]) * hz  # noqa: E731  (user, system, children user, children system)
    start, own_start = machine_jiffies(), own()
    yield out
    end, own_end = machine_jiffies(), own()
    if start and end and end[1] > start[1]:
        out.append(max(0.0, ((end[0] - start[0]) - (own_end - own_start)) / (end[1] - start[1])))


def bench_raw(cfg: Config) -> dict:
    """llama-bench prefill and llama-batched-bench S_TG, each alone; -> numbers and other processes' share."""
    raw: dict = {}
    shares = []
    wait_for_quiet_cpus(cfg.quiet_wait)
    flags = f"-t {THREADS} -p 512 -n 0 -fa 1 -o json -r {2 if cfg.quick else 5}"
    with others_cpu_around_children() as others:
        out = run_tool([str(cfg.bin_dir / "llama-bench"), "-m", cfg.model, *flags.split()])
    shares += others
    start, end = out.index("["), out.rindex("]") + 1
    raw["raw_prefill_tok_s"] = next(
        t["avg_ts"] for t in json.loads(out[start:end]) if t.get("n_prompt") == 512
    )
    wait_for_quiet_cpus(cfg.quiet_wait)
    flags = f"-t {THREADS} -c 4096 -npp 128 -ntg 64 -npl 1,{SLOTS} -fa on --output-format jsonl"
    with others_cpu_around_children() as others:
        out = run_tool([str(cfg.bin_dir / "llama-batched-bench"), "-m", cfg.model, *flags.split()])
    shares += others
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{") and "speed_tg" in line]
    s_tg = {row["pl"]: row["speed_tg"] for row in rows}
    raw |= {"raw_tg1_tok_s": s_tg.get(1), "raw_tg8_tok_s": s_tg.get(SLOTS)}
    raw["raw_others_cpu"] = max(shares) if shares else None
    share = raw["raw_others_cpu"]
    mark = f"  * other processes used {share:.0%} of the CPUs" if share and share > BUSY_WARN else ""
    print("  " + ", ".join(f"{k}={fmt(v)}" for k, v in raw.items() if k != "raw_others_cpu") + mark)
    return raw


# ----------------------------------------------------------------------------- report


# key, label, better: "high" (a rate), "low" (seconds) or "count" (no ratio)
ROWS = [
    ("single_tok_s", "single: 1 stream x 64 tok, tok/s", "high"),
    ("staggered_tok_s", "staggered: 8 clients 16-112 tok, tok/s", "high"),
    ("staggered_steady_tok_s", "staggered: while all 8 active, tok/s", "high"),
    ("shared_req_s", "shared block: steady req/s (8 clients)", "high"),
    ("shared_cold_s", "shared block: cold round of 8, s", "low"),
    ("shared_prompt_tokens", "shared block: prompt tokens/req", "count"),
    ("shared_computed_per_req", "shared block: steady computed tok/req", "count"),
    ("multiturn_s", "multiturn: 1 conversation, s", "low"),
    ("multiturn_prompt", "multiturn: prompt tokens, sum", "count"),
    ("multiturn_computed", "multiturn: computed prompt tokens, sum", "count"),
    ("multiturn_par_s", "multiturn: 4 conversations, s", "low"),
    ("multiturn_par_computed", "multiturn x4: computed prompt tok, sum", "count"),
    ("rollouts_s", "rollouts: 16 trajectories x 5 turns, s", "low"),
    ("rollouts_prompt", "rollouts: prompt tokens, sum", "count"),
    ("rollouts_computed", "rollouts: computed prompt tokens, sum", "count"),
    ("n4_s", "n=4: ~300-tok prompt x 32 tok, s", "low"),
    ("n4_computed", "n=4: computed prompt tokens", "count"),
    ("rss_idle_mib", "server RSS after warm-up, MiB", "count"),
    ("rss_after_mib", "server RSS after every workload, MiB", "count"),
]


def fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def speed_ratio(ours, theirs: list, better: str) -> float | None:
    theirs = [v for v in theirs if isinstance(v, int | float)]
    if better == "count" or not isinstance(ours, int | float) or not theirs or not ours:
        return None
    return ours / max(theirs) if better == "high" else min(theirs) / ours


def workload_of(key: str) -> str:
    return key.split("_", 1)[0]


def print_table(cfg: Config, results: dict[str, dict], raw: dict) -> dict:
    keys = [c for c in CONTENDERS if c in results]
    labels = {
        "llmhost": "llmhost",
        "llmhost-kvu": "llmhost -kvu",
        "llama-server": "llama-server",
        "llama-server-kvu": "llama-srv -kvu",
    }
    ours = [k for k in OURS if k in keys]
    print(
        f"\n{'workload':<40} "
        + " ".join(f"{labels[k]:>14}" for k in keys)
        + "".join(f" {labels[k] + '/best':>18}" for k in ours)
    )
    ratios = {}
    for key, label, better in ROWS:
        is_chosen = workload_of(key) in cfg.only or key.startswith("rss_")
        if not is_chosen or not any(key in results[k] for k in keys):
            continue
        values = [results[k].get(key) for k in keys]
        cells = []
        for k, v in zip(keys, values, strict=True):
            share = results[k].get(f"{workload_of(key)}_others_cpu")
            cells.append(f"{fmt(v) + ('*' if share and share > BUSY_WARN else ''):>14}")
        llama = [results[k].get(key) for k in keys if k not in OURS]
        shown = []
        for k in ours:
            r = speed_ratio(results[k].get(key), llama, better)
            ratios[key if k == "llmhost" else f"{k}:{key}"] = r
            shown.append(f" {fmt(r) if r is not None else '-':>18}")
        print(f"{label:<40} " + " ".join(cells) + "".join(shown))
    notes = {k: [results[k].get(n) for n in ("single_note", "staggered_note", "n4_how")] for k in keys}
    for k, items in notes.items():
        shown = [n for n in items if n and n != "n=4"]
        if shown:
            print(f"  note {labels[k]}: {'; '.join(shown)}")
    if "multiturn" in cfg.only:
        print("\nmultiturn per turn (prompt tokens / computed):")
        for k in keys:
            prompt = results[k].get("multiturn_prompt_per_turn") or []
            computed = results[k].get("multiturn_computed_per_turn") or []
            pairs = " ".join(f"{p}/{fmt(c)}" for p, c in zip(prompt, computed, strict=False))
            print(f"  {labels[k]:<15} {pairs}")
    if raw:
        mark = "*" if (raw["raw_others_cpu"] or 0) > BUSY_WARN else ""
        print(
            f"\nraw limits: prefill (llama-bench pp512) {fmt(raw['raw_prefill_tok_s'])} tok/s, "
            f"batched decode S_TG 1 seq {fmt(raw['raw_tg1_tok_s'])} tok/s, "
            f"{SLOTS} seqs {fmt(raw['raw_tg8_tok_s'])} tok/s{mark}"
        )
        print(f"{'ratio to raw':<40} " + " ".join(f"{labels[k]:>14}" for k in keys))
        for label, key, den in (
            ("single tok/s / S_TG(1)", "single_tok_s", raw["raw_tg1_tok_s"]),
            ("staggered tok/s / S_TG(8)", "staggered_tok_s", raw["raw_tg8_tok_s"]),
            ("staggered 8 active tok/s / S_TG(8)", "staggered_steady_tok_s", raw["raw_tg8_tok_s"]),
            ("shared cold prefill tok/s / pp512", "shared_cold_prefill_tok_s", raw["raw_prefill_tok_s"]),
        ):
            cells = [results[k].get(key) for k in keys]
            if den and any(isinstance(c, int | float) for c in cells):
                shown = [fmt(c / den) if isinstance(c, int | float) else "n/a" for c in cells]
                print(f"{label:<40} " + " ".join(f"{s:>14}" for s in shown))
    shares = [v for r in [*results.values(), raw] for k, v in r.items() if k.endswith("_others_cpu")]
    if any(v is not None and v > BUSY_WARN for v in shares):
        print(f"* other processes used more than {BUSY_WARN:.0%} of the CPUs during that workload")
    print("ratios: llmhost (each KV layout) / best llama-server as a speed (>1: faster; seconds inverted)")
    return ratios


def median_of_rounds(rounds: list[dict]) -> dict:
    """One dict from each round's: numbers -> their median (CPU shares of other processes -> the
    highest), anything else -> the first round's."""
    out: dict = {}
    for key in dict.fromkeys(k for r in rounds for k in r):
        values = [r.get(key) for r in rounds if r.get(key) is not None]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if numbers and len(numbers) == len(values):
            out[key] = max(numbers) if key.endswith("_others_cpu") else statistics.median(numbers)
        else:
            out[key] = values[0] if values else None
    return out


HEADLINE = [  # (key, better) whose ratio is shown round by round
    ("single_tok_s", "high"),
    ("staggered_tok_s", "high"),
    ("staggered_steady_tok_s", "high"),
    ("shared_req_s", "high"),
    ("shared_cold_s", "low"),
]


def print_rounds(result_rounds: list[dict[str, dict]], raw_rounds: list[dict]) -> None:
    """Each round's llmhost / best llama-server ratio (and the median of those): the run-to-run spread."""
    print("\nround by round, llmhost / best llama-server (median of the rounds last):")
    for mine in OURS:
        for key, better in HEADLINE:
            ratios = []
            for rnd in result_rounds:
                anchors = [v.get(key) for k, v in rnd.items() if k not in OURS]
                ratios.append(speed_ratio(rnd.get(mine, {}).get(key), anchors, better))
            known = [r for r in ratios if r is not None]
            if known:
                shown = " ".join(fmt(r) if r is not None else "n/a" for r in ratios)
                name = key if mine == "llmhost" else f"{key} (-kvu)"
                print(f"  {name:<34} {shown}   median {fmt(statistics.median(known))}")
    tg8 = [r.get("raw_tg8_tok_s") for r in raw_rounds]
    for key in ("staggered_tok_s", "staggered_steady_tok_s"):
        pairs = [(rnd.get("llmhost", {}).get(key), den) for rnd, den in zip(result_rounds, tg8, strict=False)]
        shares = [ours / den for ours, den in pairs if ours and den]
        if shares:
            shown = " ".join(fmt(x) for x in shares)
            print(f"  {key + ' / S_TG(8)':<28} {shown}   median {fmt(statistics.median(shares))}")


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    if missing := missing_binaries(cfg):
        print(
            f"missing {', '.join(missing)} in {cfg.bin_dir}: run `make llama-server` first "
            "(builds them from llama-cpp-python's llama.cpp, about 10-15 minutes on 2 cores)",
            file=sys.stderr,
        )
        return 2
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"model {cfg.model}\nthreads={THREADS} slots={SLOTS} ctx/slot={CTX_PER_SLOT} "
        f"{'quick' if cfg.quick else 'full'} run; workloads {','.join(cfg.only)}; load average {load}"
    )
    started = time.monotonic()
    raw_rounds: list[dict] = []
    result_rounds: list[dict[str, dict]] = []
    for r in range(cfg.rounds):
        if cfg.rounds > 1:
            print(f"= round {r + 1} of {cfg.rounds}")
        if "raw" in cfg.only:
            print("- raw limits (llama-bench, llama-batched-bench; no server running)")
            raw_rounds.append(bench_raw(cfg))
        every = contenders(cfg)
        results: dict[str, dict] = {}
        for contender in every[r % len(every) :] + every[: r % len(every)]:  # each goes first in turn
            print(f"- {contender.label}")
            try:
                results[contender.key] = bench_contender(cfg, contender)
            except (RuntimeError, httpx.HTTPError) as exc:
                print(f"ERROR: {contender.label}: {exc}", file=sys.stderr)
                return 1
            got = results[contender.key]
            if got.get("shared_cold_s") and got.get("shared_prompt_tokens"):
                got["shared_cold_prefill_tok_s"] = SLOTS * got["shared_prompt_tokens"] / got["shared_cold_s"]
        result_rounds.append(results)
    raw = median_of_rounds(raw_rounds)
    results = {k: median_of_rounds([rnd[k] for rnd in result_rounds]) for k in result_rounds[0]}
    if cfg.rounds > 1:
        print_rounds(result_rounds, raw_rounds)
    ratios = print_table(cfg, results, raw)
    print(f"\ntotal {time.monotonic() - started:.0f}s")
    if cfg.json_path:
        out = {
            "config": {
                "model": cfg.model,
                "threads": THREADS,
                "slots": SLOTS,
                "ctx_per_slot": CTX_PER_SLOT,
                "quick": cfg.quick,
                "workloads": list(cfg.only),
                "llmhost_args": cfg.llmhost_args,
                "rounds": cfg.rounds,
            },
            "raw": raw,
            "results": results,
            "rounds": {"raw": raw_rounds, "results": result_rounds},
            "ratios_llmhost_over_best_llama_server": ratios,
        }
        Path(cfg.json_path).write_text(json.dumps(out, indent=2))
        print(f"wrote {cfg.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
