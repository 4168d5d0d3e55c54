"""llama.cpp vs transformers engine, in-process, on the same model: aggregate tokens/s at 1 and 4 streams.

Both engines run the embedded SmolLM2-135M-Instruct GGUF by default (llama.cpp on its Q4_1 weights,
transformers on the same weights dequantised to `--dtype`, float32 by default), one engine at a time,
with the same thread count. Every request generates `--new-tokens` tokens greedily with `ignore_eos`, so
each really runs to its length. Aggregate tokens/s = tokens of all streams / wall time from the first
request to the last finished; one untimed warm-up request precedes each engine's measurements, and each
measurement is repeated `--rounds` times (the median is reported). Absolute numbers are noisy on a shared
2-core box: compare the ratio, and rerun when the load is high (the load average is printed).

Run:  .venv/bin/python benchmarks/bench_engines.py [--streams 1,4] [--new-tokens 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time

from llmhost.models.source import embedded_model_path
from llmhost.types import SamplingParams

PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain, step by step, how a bicycle gear system works.",
    "List ten facts about the planet Jupiter, one per line.",
    "Describe the water cycle to a ten-year-old in detail.",
    "Write a poem about autumn leaves falling in a quiet park.",
    "Give a detailed recipe for a vegetable curry with rice.",
    "Explain how a hash table works and when to use one.",
    "Tell the history of the printing press in a few paragraphs.",
]


def build(kind: str, args: argparse.Namespace):
    path = embedded_model_path() if args.model is None else args.model
    if kind == "llama.cpp":
        from llmhost.engines.llamacpp.engine import LlamaCppEngine

        return LlamaCppEngine(
            str(path), model_name="bench", max_model_len=1024, max_num_seqs=8, threads=args.threads
        )
    from llmhost.engines.transformers.engine import TransformersEngine

    return TransformersEngine(
        path,
        model_format="gguf",
        model_name="bench",
        max_model_len=1024,
        max_num_seqs=8,
        threads=args.threads,
        dtype=args.dtype,
        gpu=args.gpu,
    )


async def one_stream(engine, prompt: str, new_tokens: int) -> int:
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    count = 0
    async for delta in engine.generate(engine.tokenize(prompt), params):
        count += len(delta.token_ids)
    return count


async def measure(engine, streams: int, new_tokens: int) -> float:
    started = time.perf_counter()
    counts = await asyncio.gather(*(one_stream(engine, PROMPTS[i], new_tokens) for i in range(streams)))
    return sum(counts) / (time.perf_counter() - started)


async def bench_engine(kind: str, args: argparse.Namespace) -> dict:
    engine = build(kind, args)
    started = time.perf_counter()
    await engine.start()
    load_s = time.perf_counter() - started
    try:
        await one_stream(engine, PROMPTS[0], 8)  # warm-up
        result: dict = {"load_s": round(load_s, 1), "device": engine.info().device}
        for streams in args.streams:
            runs = [await measure(engine, streams, args.new_tokens) for _ in range(args.rounds)]
            result[f"{streams}_streams_tok_s"] = round(statistics.median(runs), 1)
            result[f"{streams}_streams_runs"] = [round(r, 1) for r in runs]
        return result
    finally:
        await engine.close()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="GGUF file (default: the embedded model)")
    parser.add_argument("--streams", default="1,4", help="comma-separated concurrent stream counts")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", default="float32", help="transformers engine dtype")
    parser.add_argument("--gpu", default="none", help="transformers engine --gpu (default: the CPU)")
    parser.add_argument("--engines", default="llama.cpp,transformers", help="which engines to run, in order")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    args.streams = [int(s) for s in args.streams.split(",")]
    results = {}
    for kind in args.engines.split(","):
        print(f"{kind}: load average before {os.getloadavg()[0]:.1f}", flush=True)
        results[kind] = await bench_engine(kind, args)
        print(f"{kind}: {results[kind]}", flush=True)
    print("\n| engine | load s | " + " | ".join(f"{s} stream(s) tok/s" for s in args.streams) + " |")
    print("|---|---|" + "---|" * len(args.streams))
    for kind, r in results.items():
        cells = " | ".join(str(r[f"{s}_streams_tok_s"]) for s in args.streams)
        print(f"| {kind} ({r['device']}) | {r['load_s']} | {cells} |")
    for s in args.streams if len(results) == 2 else []:
        ratio = results["transformers"][f"{s}_streams_tok_s"] / results["llama.cpp"][f"{s}_streams_tok_s"]
        print(f"transformers / llama.cpp at {s} stream(s): {ratio:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items()}, "results": results}, f, indent=2)


if __name__ == "__main__":
    asyncio.run(main())
