"""Prefix reuse in the llama.cpp engine, on the real embedded model.

Every answer is checked against the same prompt on an engine with prefix caching off, whether the prefix
came from an idle slot, from a sequence that computed it in the same batch, or was evicted in between.
Computing a prompt in other chunks rounds differently in llama.cpp (see tests/greedy.py), so those
answers must agree except at a near-tie; the engine without caching must be bit-identical alone and
batched.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import pytest

from llmhost.types import SamplingParams, TokenLogprob, Usage
from tests.conftest import TEST_MAX_MODEL_LEN
from tests.greedy import assert_greedy_close

RUBRIC = (
    "You grade answers for a science quiz. Read the question and the student's answer. Award full marks "
    "only when the answer is correct and complete; partial marks when it is on the right track but "
    "misses a step; no marks otherwise. Explain your grade in one sentence, then give the grade as a "
    "single letter: A for full marks, B for partial marks, C for none. Be strict about units, be kind "
    "about spelling, and never reveal the model answer. "
)
ITEMS = [
    "Question: why is the sky blue? Answer: scattering.",
    "Question: what is 7 times 8? Answer: 56.",
    "Question: what melts ice? Answer: heat.",
    "Question: name a noble gas. Answer: neon.",
    "Question: what is H2O? Answer: water.",
    "Question: how many legs has a spider? Answer: six.",
    "Question: what planet is red? Answer: Mars.",
    "Question: what is the boiling point of water? Answer: 100.",
]
GREEDY = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True, logprobs=5)


@dataclass
class Answer:
    tokens: list[int]
    logprobs: list[TokenLogprob]
    usage: Usage | None

    @property
    def run(self) -> tuple[list[int], list[TokenLogprob]]:
        return self.tokens, self.logprobs


async def answer(engine, prompt: list[int], params: SamplingParams = GREEDY) -> Answer:
    tokens: list[int] = []
    logprobs: list[TokenLogprob] = []
    usage = None
    async for delta in engine.generate(prompt, params):
        tokens += delta.token_ids
        logprobs += delta.logprobs or []
        usage = delta.usage or usage
    return Answer(tokens, logprobs, usage)


async def _engine(
    model_path, *, prefix_caching: bool, max_num_seqs: int, ram_bytes: int = 0, kv_unified: bool = False
):
    from llmhost.engines.llamacpp.engine import LlamaCppEngine

    eng = LlamaCppEngine(
        str(model_path),
        model_name="smol",
        max_model_len=TEST_MAX_MODEL_LEN,
        max_num_seqs=max_num_seqs,
        threads=1,  # two engines live in this module; they run one at a time
        prefix_caching=prefix_caching,
        prefix_cache_ram_bytes=ram_bytes,
        kv_unified=kv_unified,
    )
    await eng.start()
    return eng


# The two KV layouts: a stream per sequence (prefixes copied between streams) and one unified pool
# (prefix cells tagged with several sequence ids).
LAYOUTS = pytest.mark.parametrize("kv_unified", [False, True], ids=["streams", "unified"])


@pytest.fixture(scope="module", params=[False, True], ids=["streams", "unified"])
async def cached(model_path, request):
    eng = await _engine(model_path, prefix_caching=True, max_num_seqs=8, kv_unified=request.param)
    yield eng
    await eng.close()


@pytest.fixture
def plain(reproducible_engine):
    return reproducible_engine


def hits(engine) -> int:
    return engine.stats().prefix_cache_hits


async def test_without_prefix_caching_answers_are_bit_identical_alone_and_batched(plain):
    """Per-sequence KV streams: a sequence's numbers never depend on what else runs, so each answer
    equals its solo run exactly, for prompts that arrive together and one by one, in any slot."""
    prompts = [plain.tokenize(f"Heron {i}. " + RUBRIC[: 40 + 37 * i] + ITEMS[i]) for i in range(8)]
    solo = [await answer(plain, p) for p in prompts]
    together = await asyncio.gather(*(answer(plain, p) for p in prompts))

    async def later(i: int, p: list[int]) -> Answer:
        await asyncio.sleep(0.05 * ((i * 3) % 8))
        return await answer(plain, p)

    staggered = await asyncio.gather(*(later(i, p) for i, p in enumerate(prompts)))
    assert len({tuple(a.tokens) for a in solo}) > 4
    assert [a.tokens for a in together] == [a.tokens for a in solo]
    assert [a.tokens for a in staggered] == [a.tokens for a in solo]


async def test_a_repeated_prompt_reuses_all_but_its_last_token(cached, plain):
    prompt = cached.tokenize("Zanzibar ledger. " + RUBRIC + ITEMS[0])
    reference = await answer(plain, prompt)
    before = hits(cached)
    first = await answer(cached, prompt)
    second = await answer(cached, prompt)
    assert first.usage.cached_tokens == 0  # nothing in the cache starts with "Zanzibar"
    assert second.usage.cached_tokens == len(prompt) - 1  # the last token is computed for its logits
    assert hits(cached) - before == len(prompt) - 1
    assert_greedy_close(reference.run, first.run, "first")
    assert_greedy_close(reference.run, second.run, "cache hit")
    assert plain.stats().prefix_cache_hits == 0
    assert (await answer(plain, prompt)).usage.cached_tokens == 0


async def test_a_block_shared_by_eight_concurrent_prompts_is_computed_once(cached, plain):
    block = "Quokka rubric. " + RUBRIC
    prompts = [cached.tokenize(block + item) for item in ITEMS]
    num_block = len(cached.tokenize(block)) - 1  # the block's last token may merge with the item's first
    references = [await answer(plain, p) for p in prompts]
    queries_before, hits_before = cached.stats().prefix_cache_queries, hits(cached)
    answers = await asyncio.gather(*(answer(cached, p) for p in prompts))
    for i, (ref, got) in enumerate(zip(references, answers, strict=True)):
        assert_greedy_close(ref.run, got.run, i)
    num_queried = cached.stats().prefix_cache_queries - queries_before
    num_hit = hits(cached) - hits_before
    assert num_queried == sum(len(p) for p in prompts)
    assert num_hit >= 7 * num_block, (num_hit, num_block)  # the first computes it, seven copy it
    assert sum(a.usage.cached_tokens for a in answers) == num_hit
    assert sorted(a.usage.cached_tokens for a in answers)[0] == 0


async def test_n_identical_prompts_compute_the_prompt_once(cached, plain):
    prompt = cached.tokenize("Okapi census. " + RUBRIC + ITEMS[3])
    reference = await answer(plain, prompt)
    before = hits(cached)
    answers = await asyncio.gather(*(answer(cached, prompt) for _ in range(4)))
    for i, got in enumerate(answers):
        assert_greedy_close(reference.run, got.run, i)
    assert hits(cached) - before == 3 * (len(prompt) - 1)
    assert sorted(a.usage.cached_tokens for a in answers) == [0] + [len(prompt) - 1] * 3


async def test_an_evicted_prefix_is_computed_again_with_the_same_answer(model_path, plain):
    small = await _engine(model_path, prefix_caching=True, max_num_seqs=2)
    try:
        prompt = small.tokenize("Narwhal minutes. " + RUBRIC + ITEMS[1])
        reference = await answer(plain, prompt)
        assert_greedy_close(reference.run, (await answer(small, prompt)).run, "first")
        # Two unrelated prompts at once take both slots: the first prompt's cells are overwritten.
        others = [small.tokenize(f"{word} " + ITEMS[i]) for i, word in ((2, "Tapir"), (4, "Ibex"))]
        await asyncio.gather(*(answer(small, p) for p in others))
        again = await answer(small, prompt)
        assert again.usage.cached_tokens == 0
        assert_greedy_close(reference.run, again.run, "after eviction")
    finally:
        await small.close()


async def test_an_evicted_prefix_is_restored_from_host_ram_with_the_same_answer(model_path, plain):
    small = await _engine(model_path, prefix_caching=True, max_num_seqs=2, ram_bytes=64 * 2**20)
    try:
        prompt = small.tokenize("Narwhal minutes. " + RUBRIC + ITEMS[1])
        reference = await answer(plain, prompt)
        first = await answer(small, prompt)
        assert small.stats().prefix_cache_ram_bytes == 0  # nothing was evicted yet
        others = [small.tokenize(f"{word} " + ITEMS[i]) for i, word in ((2, "Tapir"), (4, "Ibex"))]
        await asyncio.gather(*(answer(small, p) for p in others))
        assert small.stats().prefix_cache_ram_bytes > 0  # the overwritten slot was saved first
        again = await answer(small, prompt)
        assert again.usage.cached_tokens == len(prompt) - 1
        assert small.stats().prefix_cache_ram_restores == 1
        assert_greedy_close(reference.run, first.run, "first")
        assert_greedy_close(reference.run, again.run, "restored from host RAM")
        # The restored prefix serves a longer prompt too, and what it does not hold is computed.
        longer = small.tokenize("Narwhal minutes. " + RUBRIC + ITEMS[1] + " Be brief.")
        await asyncio.gather(*(answer(small, p) for p in others))
        extended = await answer(small, longer)
        assert extended.usage.cached_tokens >= len(prompt) - 1
        assert_greedy_close((await answer(plain, longer)).run, extended.run, "longer prompt")
    finally:
        await small.close()


async def test_a_state_host_ram_cannot_take_is_computed_again_and_serving_goes_on(
    model_path, plain, monkeypatch
):
    """Saving a state can fail (no memory map left: vm.max_map_count, or RAM): the prefix is then
    computed again, as without the cache, and no request fails."""
    from llmhost.engines.llamacpp.backend import LlamaContext

    def no_map_left(self, seq_id):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(LlamaContext, "save_seq", no_map_left)
    small = await _engine(model_path, prefix_caching=True, max_num_seqs=2, ram_bytes=64 * 2**20)
    try:
        prompt = small.tokenize("Narwhal minutes. " + RUBRIC + ITEMS[1])
        reference = await answer(plain, prompt)
        await answer(small, prompt)
        others = [small.tokenize(f"{word} " + ITEMS[i]) for i, word in ((2, "Tapir"), (4, "Ibex"))]
        await asyncio.gather(*(answer(small, p) for p in others))  # overwrite the slot: the save fails
        again = await answer(small, prompt)
        assert again.usage.cached_tokens == 0
        assert small.stats().prefix_cache_ram_bytes == 0
        assert_greedy_close(reference.run, again.run, "computed again")
    finally:
        await small.close()


async def test_a_copy_between_streams_that_fails_is_computed_instead_and_serving_goes_on(
    model_path, plain, monkeypatch
):
    """Copying a prefix from one slot's stream to another needs memory for the rows (an anonymous map):
    when there is none, the sequences that would copy compute their prompt, and no request fails."""
    from llmhost.engines.llamacpp.backend import LlamaContext

    def no_map_left(self, seq_id):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(LlamaContext, "save_seq", no_map_left)
    engine = await _engine(model_path, prefix_caching=True, max_num_seqs=4)
    try:
        prompt = engine.tokenize("Gecko tally. " + RUBRIC + ITEMS[5])
        reference = await answer(plain, prompt)
        answers = await asyncio.gather(*(answer(engine, prompt) for _ in range(4)))  # 3 would copy
        for i, got in enumerate(answers):
            assert_greedy_close(reference.run, got.run, i)
        assert [a.usage.cached_tokens for a in answers] == [0, 0, 0, 0]
        assert engine.stats().num_running == 0
    finally:
        await engine.close()


async def test_a_gap_that_cannot_be_closed_is_retried_once_a_second_not_every_step(model_path, monkeypatch):
    """Three sequences in slots 0-2; the middle one ends first and leaves a gap that a copy would close.
    With no memory for copies the others go on decoding in two passes, and the move is tried again only
    after `GAP_MOVE_RETRY_S`, not at each of their ~40 steps (a failed copy and a warning each)."""
    import time

    from llmhost.engines.llamacpp import slot_cells
    from llmhost.engines.llamacpp.backend import LlamaContext

    tries = []

    def no_map_left(self, seq_id):
        tries.append(seq_id)
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(LlamaContext, "save_seq", no_map_left)
    engine = await _engine(model_path, prefix_caching=True, max_num_seqs=4)  # no host-RAM cache: no saves
    try:
        lengths = [40, 2, 40]
        prompts = [
            engine.tokenize(f"{word} ledger, entry {k}.") for k, word in enumerate(("Ox", "Yak", "Elk"))
        ]
        start = time.monotonic()
        answers = await asyncio.gather(
            *(
                answer(engine, p, SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True))
                for p, n in zip(prompts, lengths, strict=True)
            )
        )
        elapsed_s = time.monotonic() - start
        assert [len(a.tokens) for a in answers] == lengths
        assert 1 <= len(tries) <= 1 + elapsed_s / slot_cells.GAP_MOVE_RETRY_S
    finally:
        await engine.close()


async def test_host_ram_states_stay_within_their_bound_least_recently_used_first(model_path):
    probe = await _engine(model_path, prefix_caching=True, max_num_seqs=1, ram_bytes=256 * 2**20)
    heads = [f"{word} ledger. " + RUBRIC for word in ("Walrus", "Puffin", "Marmot")]
    try:  # one slot: every new prompt overwrites the last one, which is saved
        prompts = [probe.tokenize(h + ITEMS[0]) for h in heads]
        for p in prompts:
            await answer(probe, p)
        one_state = probe.stats().prefix_cache_ram_bytes // 2  # two evicted so far, of equal length
    finally:
        await probe.close()
    engine = await _engine(model_path, prefix_caching=True, max_num_seqs=1, ram_bytes=int(one_state * 1.5))
    try:
        for p in prompts:
            await answer(engine, p)
            assert engine.stats().prefix_cache_ram_bytes <= int(one_state * 1.5)
        # Room for one state: the second prompt's (evicted by the third) is kept, the first's is not.
        assert (await answer(engine, prompts[1])).usage.cached_tokens == len(prompts[1]) - 1
        assert (await answer(engine, prompts[0])).usage.cached_tokens < len(heads[0]) // 4
    finally:
        await engine.close()


@LAYOUTS
async def test_random_arrivals_and_cancellations_never_mix_sequences(model_path, plain, kv_unified):
    """Crosstalk under churn: 160 requests over prompts that share prefixes in several ways arrive at
    random times on 4 slots (so they queue, copy prefixes from busy and idle slots, and evict), a
    quarter are cancelled part-way; every answer must agree with the no-cache engine's (but at a
    near-tie), and the cancelled ones leave nothing behind. Evicted prefixes go to a host-RAM cache
    small enough to churn too, and come back from it."""
    engine = await _engine(
        model_path, prefix_caching=True, max_num_seqs=4, ram_bytes=12 * 2**20, kv_unified=kv_unified
    )
    try:
        heads = ["Quince rubric. " + RUBRIC, "Quince rubric. " + RUBRIC[:200], "Lemur notes. "]
        prompts = [engine.tokenize(h + item) for h in heads for item in ITEMS[:4]]
        references = [(await answer(plain, p)).run for p in prompts]
        rng = random.Random(1234)

        async def one(k: int) -> None:
            await asyncio.sleep(rng.random() * 3.0)
            i = rng.randrange(len(prompts))
            max_tokens = rng.randint(1, 8)
            cancel_after = rng.randint(1, max_tokens) if rng.random() < 0.25 else None
            params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, logprobs=5)
            got: list[int] = []
            got_logprobs: list[TokenLogprob] = []
            stream = engine.generate(prompts[i], params)
            try:
                async for delta in stream:
                    got += delta.token_ids
                    got_logprobs += delta.logprobs or []
                    if cancel_after is not None and len(got) >= cancel_after:
                        break
            finally:
                await stream.aclose()
            ref_tokens, ref_logprobs = references[i]
            n = len(got)
            assert_greedy_close((ref_tokens[:n], ref_logprobs[:n]), (got, got_logprobs), (k, i))
            if cancel_after is None:
                assert n == max_tokens

        await asyncio.gather(*(one(k) for k in range(160)))
        assert engine.stats().prefix_cache_hits > 0
        assert engine.stats().prefix_cache_ram_restores > 0
        for _ in range(300):  # cancelled sequences leave at the next step
            if engine.stats().num_running == 0:
                break
            await asyncio.sleep(0.01)
        assert engine.stats().num_running == 0
    finally:
        await engine.close()


def _pass_counter():
    """A ggml eval callback that counts forward passes (computations of layer 0's attention norm)."""
    import ctypes

    import llama_cpp as C
    from llama_cpp._ggml import libggml

    get_name = libggml.ggml_get_name
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    counts = {"passes": 0}

    @C.ggml_backend_sched_eval_callback
    def on_node(tensor, ask, _user_data):
        if ask and get_name(tensor) == b"attn_norm-0":
            counts["passes"] += 1
        return False  # observe nothing: the graph runs in one piece

    return on_node, counts


@LAYOUTS
async def test_staggered_arrivals_keep_every_decode_in_one_forward_pass(model_path, kv_unified):
    """Sequences that start and end at different times (some cancelled), prompt chunks next to decodes,
    in slots that free up out of order. With a KV stream per slot llama.cpp runs one forward pass per run
    of consecutive sequence ids with equally many tokens each: a step with only decodes must be one pass
    (one read of the weights), and prompt chunks may add at most one pass each (the rest of the chunk
    after its first token). In the unified pool every step is one pass."""
    from llmhost.engines.llamacpp.engine import LlamaCppEngine

    callback, counts = _pass_counter()
    engine = LlamaCppEngine(
        str(model_path),
        model_name="smol",
        max_model_len=TEST_MAX_MODEL_LEN,
        max_num_seqs=8,
        threads=1,
        eval_callback=callback,
        kv_unified=kv_unified,
    )
    await engine.start()
    ctx = engine._ctx
    steps: list[tuple[int, int]] = []  # (passes, sequences with more than one token in the batch)
    decode = ctx.decode

    def counted_decode() -> int:
        batch = ctx.batch
        seq_ids = [batch.raw.seq_id[i][0] for i in range(batch.n_tokens)]
        chunks = sum(seq_ids.count(s) > 1 for s in set(seq_ids))
        before = counts["passes"]
        rc = decode()
        steps.append((counts["passes"] - before, chunks))
        return rc

    ctx.decode = counted_decode
    try:
        rng = random.Random(5)

        async def one(k: int) -> None:
            await asyncio.sleep(k * 0.15)
            prompt = engine.tokenize(f"Story {k}: " + "once upon a time " * rng.randint(1, 40))
            params = SamplingParams(max_tokens=rng.randint(2, 30), temperature=0.0, ignore_eos=True)
            cancel_after = rng.randint(1, 10) if k % 5 == 0 else None
            got = 0
            stream = engine.generate(prompt, params)
            try:
                async for delta in stream:
                    got += len(delta.token_ids)
                    if cancel_after is not None and got >= cancel_after:
                        break
            finally:
                await stream.aclose()

        await asyncio.gather(*(one(k) for k in range(24)))
        decode_only = [passes for passes, chunks in steps if chunks == 0]
        assert len(decode_only) > 24 and any(chunks for _, chunks in steps)
        assert decode_only == [1] * len(decode_only)
        assert all(1 <= passes <= 1 + chunks for passes, chunks in steps)
        if kv_unified:
            assert [passes for passes, _ in steps] == [1] * len(steps)
    finally:
        await engine.close()
