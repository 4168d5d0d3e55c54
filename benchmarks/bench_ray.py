"""What Ray Serve costs and what a second replica gives: llmhost through `serve --ray` vs llmhost direct.

Each phase starts a fresh server on a free port, on the embedded SmolLM2-135M, one llama.cpp thread per
engine (`--threads 1`):

  direct   `llmhost serve`
  ray-1    `llmhost serve --ray --ray-replicas 1`   (the command starts a one-node Ray cluster)
  ray-2    `llmhost serve --ray --ray-replicas 2`

Overhead (direct and ray-1): `--requests` sequential `GET /health` (the request path alone) and chat
completions of `--short-tokens` (8) greedy tokens, each new (no shared prefix to reuse), non-streamed
(latency of the whole request) and streamed (time to the first content chunk, and to the end). Overhead
= ray-1 minus direct, at p50 and p99. The chat numbers include the engine running slower next to Ray's
own processes on the same cores; `/health` does not.

Scaling (ray-1 and ray-2): `--clients` concurrent clients send `--load-requests` streamed requests of
`--new-tokens` tokens (`ignore_eos`), each a different conversation (so affinity spreads them); aggregate
completion tokens/s; ratio ray-2 / ray-1. Two replicas can only beat one where there are cores for both:
on the 2-core box every phase shares the same two cores with Ray's own processes (GCS, raylet, proxy,
controller, ingress), so read the ratio as an upper bound on the overhead, not as the scaling a cluster
of real machines gets.

Run:  .venv/bin/python benchmarks/bench_ray.py [--requests 50] [--clients 8] [--json out.json]
      (smoke: --requests 10 --load-requests 16 --clients 4 --new-tokens 16)
It exits 0 when every phase ran: it measures, it does not test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

READY_LOG = {"direct": "serving '", "ray": "through Ray Serve"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `llmhost serve` for a phase, in its own session; stopped by SIGTERM (a --ray one takes its
    local cluster down with it), by SIGKILL to its process group after `stop_timeout_s`."""

    def __init__(self, name: str, args: list[str], log_dir: Path, startup_timeout_s: float) -> None:
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        cmd = [sys.executable, "-m", "llmhost", "serve", "--port", str(self.port), "--threads", "1"]
        cmd += ["--max-model-len", "1024", "--max-num-seqs", "8", *args]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(log_dir)}
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        ready = READY_LOG["ray" if "--ray" in args else "direct"]
        deadline = time.monotonic() + startup_timeout_s
        while ready not in self.log_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{name} did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.5)

    def stop(self, stop_timeout_s: float = 60) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=stop_timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def chat(text: str, max_tokens: int, **extra: object) -> dict:
    body = {"model": "any", "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}
    return {**body, "temperature": 0, **extra}


def overhead(server: Server, args: argparse.Namespace) -> dict[str, list[float]]:
    """Sequential latencies, in ms: health (`GET /health`), whole (a non-streamed chat), first (the first
    content chunk of a streamed one) and end (its last byte)."""
    times: dict[str, list[float]] = {"health": [], "whole": [], "first": [], "end": []}
    with httpx.Client(base_url=server.url, timeout=120) as client:
        client.post("/v1/chat/completions", json=chat("warm up", 4)).raise_for_status()
        for i in range(args.requests):
            t0 = time.perf_counter()
            client.get("/health").raise_for_status()  # no model work: the request path alone
            times["health"].append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            client.post(
                "/v1/chat/completions", json=chat(f"Q{i}: name a colour", args.short_tokens)
            ).raise_for_status()
            times["whole"].append((time.perf_counter() - t0) * 1000)
            t0, first = time.perf_counter(), None
            body = chat(f"S{i}: name an animal", args.short_tokens, stream=True)
            with client.stream("POST", "/v1/chat/completions", json=body) as response:
                for line in response.iter_lines():
                    if first is None and '"content": "' in line and '"content": ""' not in line:
                        first = time.perf_counter()
            end = time.perf_counter()
            times["first"].append(((first or end) - t0) * 1000)
            times["end"].append((end - t0) * 1000)
    return times


async def throughput(server: Server, args: argparse.Namespace) -> float:
    """Aggregate completion tokens/s of `--load-requests` streamed requests over `--clients` clients."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(args.load_requests):
        queue.put_nowait(i)
    num_tokens = 0

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal num_tokens
        while not queue.empty():
            i = queue.get_nowait()
            body = chat(f"Conversation {i}: tell a story", args.new_tokens, stream=True, ignore_eos=True)
            body["stream_options"] = {"include_usage": True}
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: {") and '"usage": {' in line:
                        usage = json.loads(line[6:]).get("usage")
                        if usage:
                            num_tokens += usage["completion_tokens"]

    async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:
        await client.post("/v1/chat/completions", json=chat("warm up", 4))
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(args.clients)))
        return num_tokens / (time.perf_counter() - t0)


def summary(times: dict[str, list[float]]) -> dict[str, float]:
    return {
        f"{k}_{q}": round(percentile(v, p), 1)
        for k, v in times.items()
        for q, p in (("p50", 0.5), ("p99", 0.99))
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=50, help="sequential requests per overhead phase")
    parser.add_argument("--short-tokens", type=int, default=8, help="tokens per overhead request")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients in the scaling phases")
    parser.add_argument("--load-requests", type=int, default=64, help="requests per scaling phase")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens per scaling request")
    parser.add_argument("--startup-timeout", type=float, default=300)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    log_dir = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    results: dict[str, dict] = {}
    for name, flags in (
        ("direct", []),
        ("ray-1", ["--ray", "--ray-replicas", "1"]),
        ("ray-2", ["--ray", "--ray-replicas", "2"]),
    ):
        load_before = os.getloadavg()[0]
        server = Server(name, flags, log_dir, args.startup_timeout)
        try:
            phase: dict = {"load_avg": round(load_before, 1)}
            if name != "ray-2":
                phase |= summary(overhead(server, args))
            if name != "direct":
                phase["tokens_per_s"] = round(asyncio.run(throughput(server, args)), 1)
            results[name] = phase
            print(f"{name:>7}: {phase}", flush=True)
        finally:
            server.stop()

    direct, one, two = results["direct"], results["ray-1"], results["ray-2"]
    added = {k: round(one[k] - direct[k], 1) for k in direct if k != "load_avg"}
    results["ray_overhead_ms"] = added
    results["ray2_over_ray1"] = round(two["tokens_per_s"] / one["tokens_per_s"], 2)
    print(f"Ray Serve adds (ms): {added}")
    print(
        f"2 replicas / 1 replica, aggregate tokens/s: {results['ray2_over_ray1']}x "
        f"(os.cpu_count()={os.cpu_count()}: both replicas share these cores)"
    )
    print(f"server logs: {log_dir}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
