"""Memory under a long mixed load: does llmhost's resident memory come back to where it started?

It starts `llmhost serve` the way `bench_vs_llama_server.py` does (2 threads, 8 sequences of 8192 tokens,
flash attention, the default host-RAM prefix cache unless `--llmhost-args` says otherwise), warms it up,
reads its resident memory (VmRSS) and then keeps 8 clients busy for `--minutes` (default 10) with a mix of
what users send, each client choosing its next request at random (seeded):

  staggered   a streamed completion, max_tokens 16..112
  shared      the ~700-token instruction block + a unique item, 4 tokens (the judge / router pattern)
  chat        the next turn of the client's own conversation (streamed chat; a new one after 8 turns)
  agent       a ~300-token task, then turns that add a tool observation (rollouts: its slot is often
              taken by then, so the transcript comes back from the host-RAM cache)
  n4          n=4 on a ~300-token prompt, 32 tokens each, not streamed
  cancelled   a streamed completion of 200 tokens that the client drops after 5 chunks

RSS is sampled every 30 s. Once the load ends and the server is idle, it reports RSS after the warm-up and
after the load, with and without the host-RAM prefix cache (`llmhost:prefix_cache_ram_bytes`: it fills
towards `--prefix-cache-ram-mb` by design, as llama-server's `--cache-ram` does), and checks:

  rss          RSS after the load, less the host-RAM cache, <= 1.1 x RSS after the warm-up, less the cache
  cache-bound  the host-RAM cache never held more than its flag (default 1024 MiB)
  answers      every request answered 200 (a dropped stream counts when its first chunks came)

Exit status 1 if a check fails. Takes `--minutes` plus about a minute.

Run:  .venv/bin/python benchmarks/soak.py [--minutes 10] [--llmhost-args "--prefix-cache-ram-mb 256"]
                                          [--json soak.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_vs_llama_server as vs  # noqa: E402  (a sibling script, not a package)

RSS_RATIO = 1.1
SAMPLE_EVERY_S = 30.0
DEFAULT_CACHE_MIB = 1024  # llmhost serve's --prefix-cache-ram-mb default
CHAT_TURNS = 8
KINDS = ("staggered", "shared", "chat", "agent", "n4", "cancelled")
WEIGHTS = (4, 3, 3, 2, 1, 1)


async def cache_bytes(client: httpx.AsyncClient, server: vs.Server) -> float:
    text = await vs.fetch_metrics(client, server) or ""
    return vs.metric_sum(text, "llmhost:prefix_cache_ram_bytes") or 0.0


async def wait_idle(client: httpx.AsyncClient, server: vs.Server) -> None:
    """Until nothing runs or waits (at most 60 s), then 3 s: the engine thread gives freed heap back to
    the OS once it has idled for a second."""
    for _ in range(120):
        text = await vs.fetch_metrics(client, server) or ""
        busy = (vs.metric_sum(text, "vllm:num_requests_running") or 0) + (
            vs.metric_sum(text, "vllm:num_requests_waiting") or 0
        )
        if busy == 0:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(3.0)


class Client:
    """One closed-loop user: picks a kind of request, sends it, checks the answer, and goes on."""

    def __init__(self, server: vs.Server, http: httpx.AsyncClient, index: int, seed: int) -> None:
        self.server, self.http, self.index = server, http, index
        self.rng = random.Random(seed * 1000 + index)
        self.chat_messages: list[dict] = []
        self.agent_messages: list[dict] = []
        self.num_sent = 0
        self.kinds: Counter[str] = Counter()
        self.failures: list[str] = []

    async def run(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            kind = self.rng.choices(KINDS, WEIGHTS)[0]
            self.num_sent += 1
            try:
                await getattr(self, kind)()
                self.kinds[kind] += 1
            except (RuntimeError, httpx.HTTPError, KeyError, ValueError) as exc:
                self.failures.append(f"{kind}: {exc}"[:300])

    def url(self, path: str) -> str:
        return self.server.base + path

    async def staggered(self) -> None:
        prompt = vs.PROMPTS[self.rng.randrange(len(vs.PROMPTS))]
        await vs.stream(
            self.http, self.url("/v1/completions"), vs.completion(prompt, self.rng.randint(16, 112))
        )

    async def shared(self) -> None:
        item = vs.shared_item(self.num_sent * 8 + self.index)
        await vs.stream(
            self.http, self.url("/v1/completions"), vs.completion(vs.instruction_block() + item, 4)
        )

    async def chat_turn(self, messages: list[dict], content: str, max_tokens: int) -> None:
        messages.append({"role": "user", "content": content})
        body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True}
        reply = await vs.stream(self.http, self.url("/v1/chat/completions"), body)
        messages.append({"role": "assistant", "content": reply.text})

    async def chat(self) -> None:
        messages = self.chat_messages
        if len(messages) >= 1 + 2 * CHAT_TURNS:
            messages.clear()
        if not messages:
            messages.append(
                {"role": "system", "content": "You are a friendly assistant who answers briefly."}
            )
        turn = (len(messages) - 1) // 2
        await self.chat_turn(messages, vs.user_turn(self.index + 100 * self.num_sent, turn), 32)

    async def agent(self) -> None:
        messages = self.agent_messages
        if len(messages) >= 2 * 5:
            messages.clear()
        if not messages:
            await self.chat_turn(messages, vs.long_prompt(1000 * self.index + self.num_sent), 24)
        else:
            await self.chat_turn(messages, vs.observation(self.index, len(messages) // 2), 24)

    async def n4(self) -> None:
        body = {"prompt": vs.long_prompt(5000 + self.num_sent), "max_tokens": 32, "n": 4, "temperature": 1.0}
        resp = await vs.post(self.http, self.url("/v1/completions"), body)
        if resp.status_code != 200 or len(resp.json().get("choices", [])) != 4:
            raise RuntimeError(f"n=4 -> {resp.status_code}: {resp.text[:200]}")

    async def cancelled(self) -> None:
        body = vs.completion(vs.PROMPTS[self.index % len(vs.PROMPTS)], 200) | {"stream": True}
        async with self.http.stream("POST", self.url("/v1/completions"), json=body) as resp:
            if resp.status_code != 200:
                raise RuntimeError(f"stream -> {resp.status_code}")
            seen = 0
            async for line in resp.aiter_lines():
                seen += line.startswith("data:")
                if seen >= 5:
                    break  # leaving the block closes the connection mid-stream
        if seen < 5:
            raise RuntimeError(f"the stream ended after {seen} chunks")


async def soak(server: vs.Server, minutes: float, seed: int, cache_mib: float) -> dict:
    async with vs.new_client() as http:
        await vs.warm_up(server)
        await wait_idle(http, server)
        idle_rss, idle_cache = vs.rss_mib(server.pid), await cache_bytes(http, server) / 2**20
        print(f"after warm-up: RSS {idle_rss} MiB, host-RAM cache {idle_cache:.1f} MiB")
        deadline = time.monotonic() + 60 * minutes
        clients = [Client(server, http, i, seed) for i in range(vs.SLOTS)]
        load = asyncio.gather(*(c.run(deadline) for c in clients))
        samples, max_cache = [], idle_cache
        started = time.monotonic()
        while not load.done():
            await asyncio.wait([load], timeout=SAMPLE_EVERY_S)
            rss, cache = vs.rss_mib(server.pid), await cache_bytes(http, server) / 2**20
            max_cache = max(max_cache, cache)
            sent = sum(c.num_sent for c in clients)
            samples.append(
                {"s": round(time.monotonic() - started), "rss_mib": rss, "cache_mib": round(cache, 1)}
            )
            print(f"  {samples[-1]['s']:4d}s  RSS {rss} MiB  host-RAM cache {cache:.1f} MiB  requests {sent}")
        await load
        await wait_idle(http, server)
        after_rss, after_cache = vs.rss_mib(server.pid), await cache_bytes(http, server) / 2**20
    kinds = sum((c.kinds for c in clients), Counter())
    failures = [f for c in clients for f in c.failures]
    assert idle_rss is not None and after_rss is not None
    ratio = (after_rss - after_cache) / (idle_rss - idle_cache)
    checks = {
        "rss": ratio <= RSS_RATIO,
        "cache-bound": max_cache <= cache_mib,
        "answers": not failures,
    }
    return {
        "minutes": minutes,
        "requests": dict(kinds),
        "failures": failures[:20],
        "rss_idle_mib": idle_rss,
        "cache_idle_mib": round(idle_cache, 1),
        "rss_after_mib": after_rss,
        "cache_after_mib": round(after_cache, 1),
        "cache_max_mib": round(max_cache, 1),
        "rss_without_cache_ratio": round(ratio, 4),
        "samples": samples,
        "checks": checks,
    }


def cache_flag(args: list[str]) -> float:
    """The --prefix-cache-ram-mb the server runs with (its default when not given)."""
    joined = " ".join(args)
    found = re.search(r"--prefix-cache-ram-mb[= ](\d+)", joined)
    return float(found.group(1)) if found else float(DEFAULT_CACHE_MIB)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0, help="how long the mixed load runs (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--llmhost-args", default="", help='extra `llmhost serve` flags, e.g. "--prefix-cache-ram-mb 256"'
    )
    p.add_argument("--json", dest="json_path", default=None, help="write the report here")
    a = p.parse_args(argv)
    cfg = vs.parse_args(["--only", "single", "--contenders", "llmhost", "--llmhost-args", a.llmhost_args])
    contender = vs.Contender("llmhost", "llmhost", lambda port: vs.llmhost_argv(cfg, port), "llmhost")
    with vs.running(contender) as server:
        report = soak(server, a.minutes, a.seed, cache_flag(shlex.split(a.llmhost_args)))
        report = asyncio.run(report)
    print(f"requests by kind: {report['requests']}")
    for failure in report["failures"]:
        print(f"  failed: {failure}")
    print(
        f"RSS after warm-up {report['rss_idle_mib']} MiB (host-RAM cache {report['cache_idle_mib']}), after "
        f"{a.minutes:g} min {report['rss_after_mib']} MiB (cache {report['cache_after_mib']}, at most "
        f"{report['cache_max_mib']}); without the cache x{report['rss_without_cache_ratio']}"
    )
    for name, ok in report["checks"].items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    if a.json_path:
        Path(a.json_path).write_text(json.dumps(report, indent=2))
        print(f"wrote {a.json_path}")
    return 0 if all(report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
