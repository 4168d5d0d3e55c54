"""Prefix caching on the transformers engine (the embedded model dequantised to float32 on the CPU): a
finished sequence's KV goes to the host-RAM store, and a later prompt that starts the same way is
prefilled from it. Answers from a stored prefix must agree with the computed ones (but at a near-tie:
a prefix computed in another batch shape rounds differently), whatever else is in the batch."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")

from llmhost.types import SamplingParams  # noqa: E402
from tests.conftest import TEST_MAX_MODEL_LEN  # noqa: E402
from tests.engines.test_prefix_cache import RUBRIC, answer  # noqa: E402
from tests.greedy import assert_greedy_close  # noqa: E402

GREEDY = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True, logprobs=5)


async def _engine(model_path: Path, prefix_cache_bytes: int, max_num_seqs: int = 4):
    from llmhost.engines.transformers.engine import TransformersEngine

    eng = TransformersEngine(
        model_path,
        model_format="gguf",
        model_name="smol",
        max_model_len=TEST_MAX_MODEL_LEN,
        max_num_seqs=max_num_seqs,
        dtype="float32",
        gpu="none",
        prefix_cache_bytes=prefix_cache_bytes,
    )
    await eng.start()
    return eng


@pytest.fixture(scope="module")
async def cached(model_path: Path):
    eng = await _engine(model_path, 64 * 2**20)
    yield eng
    await eng.close()


async def test_a_repeated_prompt_is_prefilled_from_the_stored_prefix(cached):
    assert cached.info().reuses_prefixes
    prompt = cached.tokenize("Gecko audit. " + RUBRIC + "Question: what is 2+2? Answer: 4.")
    first = await answer(cached, prompt, GREEDY)
    assert first.usage.cached_tokens == 0
    assert cached.stats().prefix_cache_ram_bytes > 0  # stored when it finished
    second = await answer(cached, prompt, GREEDY)
    assert second.usage.cached_tokens == len(prompt) - 1  # the last token is computed for its logits
    assert cached.stats().prefix_cache_ram_restores >= 1
    assert_greedy_close(first.run, second.run, "from the stored prefix")


async def test_the_next_turn_reuses_the_whole_previous_turn(cached):
    """An agent loop or a conversation: the next prompt is the last one, its answer, and new text."""
    turn1 = cached.tokenize("Heron log. " + RUBRIC + "Question: name a planet.")
    reply = await answer(cached, turn1, GREEDY)
    turn2 = turn1 + reply.tokens[:-1] + cached.tokenize(" Observation: correct. Next question: a moon?")
    reference = await answer(cached, turn2, GREEDY)
    # The first answer's KV held turn1 and every answer token but the last (never fed to the model).
    assert reference.usage.cached_tokens == len(turn1) + len(reply.tokens) - 1


async def test_stored_prefixes_never_leak_into_other_rows(cached, model_path):
    """Rows prefilled from stored prefixes decode next to freshly computed rows and agree with each
    alone on an engine without the store."""
    plain = await _engine(model_path, 0)
    try:
        assert not plain.info().reuses_prefixes
        prompts = [
            cached.tokenize(f"{word} rubric. " + RUBRIC + f"Item {i}: the sky is blue.")
            for i, word in enumerate(("Ibis", "Stoat", "Vole", "Wren"))
        ]
        solo = [await answer(plain, p, GREEDY) for p in prompts]
        assert all(a.usage.cached_tokens == 0 for a in solo)
        for p in prompts[:2]:  # two of them are in the store before the batch arrives
            await answer(cached, p, GREEDY)
        together = await asyncio.gather(*(answer(cached, p, GREEDY) for p in prompts))
        assert [a.usage.cached_tokens for a in together[:2]] == [len(p) - 1 for p in prompts[:2]]
        assert [a.usage.cached_tokens for a in together[2:]] == [0, 0]
        for i, (ref, got) in enumerate(zip(solo, together, strict=True)):
            assert_greedy_close(ref.run, got.run, i)
    finally:
        await plain.close()


async def test_the_store_stays_within_its_bound(model_path):
    engine = await _engine(model_path, 12 * 2**20, max_num_seqs=2)  # ~2.5 answers (46 KiB a token)
    try:
        for word in ("Alpha", "Bravo", "Charlie", "Delta", "Echo"):
            await answer(engine, engine.tokenize(f"{word} memo. " + RUBRIC), GREEDY)
            assert 0 < engine.stats().prefix_cache_ram_bytes <= 12 * 2**20
    finally:
        await engine.close()


async def test_a_prefix_host_ram_cannot_take_is_computed_again_and_serving_goes_on(model_path, monkeypatch):
    """Copying a finished row to the store can fail (no memory map left: vm.max_map_count, or RAM): the
    sequences still running go on, nothing is stored, and the same prompt is computed again."""
    import llmhost.engines.transformers.batch as batch

    def no_map_left(tensors):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(batch, "copy_to_own_pages", no_map_left)
    engine = await _engine(model_path, 64 * 2**20)
    try:
        prompt = engine.tokenize("Ibis memo. " + RUBRIC + "Question: what is 3+3? Answer: 6.")
        long_params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
        # The short one finishes (and fails to be stored) while the long one is still decoding.
        other = engine.tokenize("Otter notes. " + RUBRIC)
        first, running = await asyncio.gather(
            answer(engine, prompt, GREEDY), answer(engine, other, long_params)
        )
        assert len(running.tokens) == 24
        second = await answer(engine, prompt, GREEDY)
        assert second.usage.cached_tokens == 0
        assert engine.stats().prefix_cache_ram_bytes == 0
        assert_greedy_close(first.run, second.run, "computed again")
    finally:
        await engine.close()
