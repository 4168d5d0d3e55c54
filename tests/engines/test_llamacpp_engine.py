"""The llama.cpp engine on the real embedded model: batching, sampling, stops, cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from llmhost.errors import ContextLengthExceeded, InvalidRequest
from llmhost.types import FinishReason, SamplingParams
from tests.greedy import assert_greedy_close

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, a dragon",
    "1, 2, 3, 4, 5,",
    "The recipe for pancakes needs",
    "In 1969, astronauts",
    "SELECT name FROM users WHERE",
    "The three primary colors are",
]


async def run(engine, prompt: str, params: SamplingParams) -> tuple[str, list[int], object]:
    text, tokens, last = "", [], None
    async for delta in engine.generate(engine.tokenize(prompt), params):
        text += delta.text
        tokens += delta.token_ids
        last = delta
    return text, tokens, last


async def run_with_logprobs(engine, prompt: str, params: SamplingParams) -> tuple[list[int], list]:
    tokens, logprobs = [], []
    async for delta in engine.generate(engine.tokenize(prompt), params):
        tokens += delta.token_ids
        logprobs += delta.logprobs or []
    return tokens, logprobs


async def test_concurrent_sequences_match_their_solo_runs(engine):
    """Crosstalk check: every prompt decoded alone and decoded in one shared batch with 7 others must
    give the same greedy tokens, but at a near-tie (the shared KV pool places cells elsewhere, which
    rounds differently: tests/greedy.py). A wrong seq id, position or logits row would change them where
    the model is sure. The bit-exact version runs without prefix caching (test_prefix_cache.py)."""
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True, logprobs=5)
    solo = [await run_with_logprobs(engine, p, params) for p in PROMPTS]
    together = await asyncio.gather(*(run_with_logprobs(engine, p, params) for p in PROMPTS))
    assert len({tuple(s[0]) for s in solo}) == len(PROMPTS), "prompts should give distinct answers"
    for prompt, alone, batched in zip(PROMPTS, solo, together, strict=True):
        assert_greedy_close(alone, batched, prompt)
        assert len(batched[0]) == 24


async def test_batch_really_shares_decode_steps(engine):
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    steps_before = engine.stats().num_steps
    await asyncio.gather(*(run(engine, p, params) for p in PROMPTS))
    steps = engine.stats().num_steps - steps_before
    # 8 sequences x 16 tokens decoded one at a time would take >= 128 steps; batched, about 16-20.
    assert steps < 40, steps


async def test_max_tokens_gives_length_and_exact_usage(engine):
    text, tokens, last = await run(
        engine, "Count: one, two,", SamplingParams(max_tokens=7, temperature=0.0, ignore_eos=True)
    )
    assert last.finish_reason == FinishReason.LENGTH
    assert len(tokens) == 7
    assert last.usage.completion_tokens == 7
    assert last.usage.prompt_tokens == len(engine.tokenize("Count: one, two,"))


async def test_stop_string_cuts_text_and_finishes(engine):
    base, _, _ = await run(engine, "1, 2, 3, 4, 5,", SamplingParams(max_tokens=20, temperature=0.0))
    assert " 8" in base  # the model counts on
    text, _, last = await run(
        engine, "1, 2, 3, 4, 5,", SamplingParams(max_tokens=20, temperature=0.0, stop=(" 8",))
    )
    assert last.finish_reason == FinishReason.STOP
    assert last.stop_reason == " 8"
    assert text == base[: base.index(" 8")]


async def test_same_seed_same_text_and_other_seed_differs(reproducible_engine):
    """Bit-reproducible sampling is what --no-enable-prefix-caching gives: with the cache on, the second
    run reuses the first one's KV and rounds differently (tests/greedy.py), which a sample can follow."""
    engine = reproducible_engine

    def params(seed: int) -> SamplingParams:
        return SamplingParams(max_tokens=32, temperature=0.8, seed=seed, ignore_eos=True)

    a, _, _ = await run(engine, "Once upon a time", params(1234))
    b, _, _ = await run(engine, "Once upon a time", params(1234))
    others = {(await run(engine, "Once upon a time", params(s)))[0] for s in (1, 2, 3)}
    assert a == b
    assert len(others | {a}) > 1


async def test_logprobs_are_normalised_and_sorted(engine):
    params = SamplingParams(max_tokens=3, temperature=0.0, logprobs=5)
    deltas = [d async for d in engine.generate(engine.tokenize("The capital of France is"), params)]
    items = [lp for d in deltas for lp in (d.logprobs or [])]
    assert len(items) == 3
    for lp in items:
        assert lp.logprob <= 0.0
        assert len(lp.top) == 5
        assert [t.logprob for t in lp.top] == sorted((t.logprob for t in lp.top), reverse=True)
        assert lp.top[0].token_id == lp.token_id  # greedy picks the most likely token


async def test_context_overflow_is_refused_before_generation(engine):
    long_prompt = engine.tokenize("hello " * 2000)
    with pytest.raises(ContextLengthExceeded):
        engine.generate(long_prompt, SamplingParams(max_tokens=5))
    short = engine.tokenize("hello")
    with pytest.raises(ContextLengthExceeded):
        engine.generate(short, SamplingParams(max_tokens=engine.info().max_model_len))
    with pytest.raises(InvalidRequest):
        engine.generate([], SamplingParams(max_tokens=5))


async def test_closing_the_stream_frees_the_slot_at_once(engine):
    params = SamplingParams(max_tokens=500, temperature=0.0, ignore_eos=True)
    keep = engine.generate(engine.tokenize("Once upon a time"), params)
    drop = engine.generate(engine.tokenize("The capital of France is"), params)
    await keep.__anext__()
    await drop.__anext__()
    assert engine.stats().num_running == 2
    await drop.aclose()
    for _ in range(5):  # a few more steps for the kept sequence
        await keep.__anext__()
    assert engine.stats().num_running == 1
    assert engine.stats().last_step_num_seqs == 1
    await keep.aclose()
    for _ in range(100):
        if engine.stats().num_running == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.stats().num_running == 0


async def test_more_sequences_than_slots_wait_and_all_finish(engine):
    params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    results = await asyncio.gather(*(run(engine, f"Item {i}:", params) for i in range(20)))
    assert all(len(tokens) == 4 for _, tokens, _ in results)


async def test_long_prompt_is_prefilled_in_chunks(engine):
    # Longer than one 512-token batch: must be split across steps and still answer like llama.cpp.
    prompt = engine.tokenize("The quick brown fox jumps over the lazy dog. " * 70)
    assert len(prompt) > 512
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    deltas = [d async for d in engine.generate(prompt, params)]
    assert deltas[-1].usage.prompt_tokens == len(prompt)
    assert sum(len(d.token_ids) for d in deltas) == 8


async def test_as_many_sequences_as_batch_tokens_all_finish(model_path):
    """--max-num-seqs 32 with a 32-token step (the smallest Settings accepts): 32 concurrent requests
    each decode one token per step in one full batch, and every one of them finishes."""
    from llmhost.engines.llamacpp.engine import LlamaCppEngine

    with pytest.raises(ValueError, match="max_num_seqs"):
        LlamaCppEngine(str(model_path), model_name="smol", max_num_seqs=32, batch_tokens=16)
    engine = LlamaCppEngine(
        str(model_path), model_name="smol", max_model_len=128, max_num_seqs=32, batch_tokens=32, threads=1
    )
    await engine.start()
    try:
        params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
        results = await asyncio.gather(*(run(engine, f"Item number {i} is", params) for i in range(40)))
        assert all(len(tokens) == 6 for _, tokens, _ in results)
    finally:
        await engine.close()


def test_detokenizing_from_many_threads_at_once_gives_each_its_own_text(model_path):
    """The scheduler thread and the prompt-preparing pool look token pieces up at the same time; every
    lookup that misses the cache calls llama.cpp with the GIL released, so each needs its own buffer."""
    from concurrent.futures import ThreadPoolExecutor

    from llmhost.engines.llamacpp.backend import LlamaModel

    reference = LlamaModel(str(model_path), vocab_only=True)
    expected = {t: reference.piece(t) for t in range(0, reference.n_vocab, 7)}
    fresh = LlamaModel(str(model_path), vocab_only=True)  # an empty piece cache: every lookup misses once
    ids = list(expected)

    def look_up(offset: int) -> dict[int, bytes]:
        order = ids[offset:] + ids[:offset]
        return {t: fresh.piece(t) for t in order}

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(look_up, (0, len(ids) // 4, len(ids) // 2, 3 * len(ids) // 4)))
    for found in results:
        assert found == expected
    reference.close()
    fresh.close()


def test_gpu_layers_follow_the_build_and_the_flags(monkeypatch):
    """The in-process engine offloads only what the llama.cpp build can: asking a CPU build for GPU
    layers is a start-up error naming the rebuild, never a silent CPU run."""
    from llmhost.engines.llamacpp import engine as llama_engine
    from llmhost.errors import ModelLoadError

    monkeypatch.setattr(llama_engine, "supports_gpu_offload", lambda: False)
    assert llama_engine.gpu_layers(None, use_gpu=True) == 0
    assert llama_engine.gpu_layers(0, use_gpu=True) == 0
    with pytest.raises(ModelLoadError, match="GGML_CUDA"):
        llama_engine.gpu_layers(8, use_gpu=True)
    monkeypatch.setattr(llama_engine, "supports_gpu_offload", lambda: True)
    assert llama_engine.gpu_layers(None, use_gpu=True) == -1  # a GPU build: every layer by default
    assert llama_engine.gpu_layers(None, use_gpu=False) == 0  # --gpu none
    assert llama_engine.gpu_layers(8, use_gpu=True) == 8


def test_asking_the_cpu_build_for_gpu_layers_stops_serve_with_one_line(tmp_path):
    import subprocess
    import sys

    from tests.conftest import free_port

    done = subprocess.run(
        [sys.executable, "-m", "llmhost", "serve", "--port", str(free_port()), "--n-gpu-layers", "8"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "--n-gpu-layers 8 needs llama-cpp-python built with GPU support" in done.stderr


async def test_an_idle_engine_gives_freed_heap_back_once_after_work(engine, monkeypatch):
    """After a spell of work, the engine thread returns the heap's free pages to the OS once it has
    idled for IDLE_WAIT_S (glibc keeps a burst's peak otherwise), and not again until there is new work."""
    import llmhost.engines.threaded as threaded

    trims: list[float] = []
    monkeypatch.setattr(threaded, "IDLE_WAIT_S", 0.05)
    monkeypatch.setattr(threaded, "release_free_heap", lambda: trims.append(time.monotonic()))
    await asyncio.sleep(1.2)  # the thread leaves a wait begun with the old 1 s (and trims for earlier tests)
    trims.clear()
    params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    async for _ in engine.generate(engine.tokenize("Hello there,"), params):
        pass
    deadline = time.monotonic() + 10
    while not trims and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert len(trims) == 1
    await asyncio.sleep(0.5)  # idle on, with nothing new done: no second trim
    assert len(trims) == 1


def test_the_free_heap_is_given_back_through_glibc_where_it_runs():
    import platform

    import llmhost.engines.threaded as threaded

    threaded.release_free_heap()
    if platform.libc_ver()[0] == "glibc":
        assert threaded._malloc_trim, "malloc_trim not found in glibc"
    else:
        assert threaded._malloc_trim is False


def _fake_cpu_sysfs(root, siblings: dict[int, str]):
    for cpu, shared in siblings.items():
        topology = root / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "thread_siblings_list").write_text(shared + "\n")
    return root


@pytest.mark.parametrize(
    ("allowed", "expected"),
    [({0, 1, 2, 3}, 2), ({0, 1}, 2), ({0, 2}, 1), ({3}, 1)],
    ids=["all", "one-thread-per-core", "two-siblings", "one-cpu"],
)
def test_default_threads_are_one_per_physical_core_the_process_may_use(tmp_path, allowed, expected):
    """Two cores with two hardware threads each (CPUs 0 and 2 share core 0, CPUs 1 and 3 core 1)."""
    from llmhost.engines.llamacpp.engine import default_threads

    sysfs = _fake_cpu_sysfs(tmp_path, {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"})
    assert default_threads(allowed, sysfs) == expected


def test_default_threads_fall_back_to_every_allowed_cpu_without_a_topology(tmp_path):
    from llmhost.engines.llamacpp.engine import default_threads

    assert default_threads({0, 1, 5}, tmp_path) == 3
    assert default_threads(set(), tmp_path) == 1
    assert default_threads() >= 1  # this machine's own sysfs
