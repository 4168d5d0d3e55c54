"""Prompt log-probabilities in the llama.cpp engine, on the real embedded model: every prompt position is
scored (the first has none), the numbers are the ones the same engine reports for a token it generates,
a cached prefix is computed again for them, and `max_tokens` 0 scores without generating."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from llmhost.engines.llamacpp import scheduler
from llmhost.engines.llamacpp.scheduler import PROMPT_LOGITS_PER_STEP
from llmhost.engines.prompt_logprobs import score_rows
from llmhost.types import Delta, FinishReason, SamplingParams

PROMPT = "The capital of France is Paris. The capital of Germany is"


async def run(engine, prompt: list[int], params: SamplingParams) -> Delta:
    whole = Delta()
    async for delta in engine.generate(prompt, params):
        whole.extend(delta)
    return whole


async def test_prompt_scores_equal_the_logprobs_of_the_same_tokens_when_generated(reproducible_engine):
    """Extend a prompt by its greedy continuation: scoring the extended prompt gives, at the continuation's
    positions, the logprobs (and rivals) the engine reported while generating those tokens."""
    engine = reproducible_engine
    prompt = engine.tokenize(PROMPT)
    generated = await run(
        engine, prompt, SamplingParams(max_tokens=4, temperature=0, logprobs=3, ignore_eos=True)
    )
    extended = prompt + generated.token_ids
    scored = await run(engine, extended, SamplingParams(max_tokens=0, prompt_logprobs=3))

    assert scored.token_ids == [] and scored.text == "" and scored.finish_reason == FinishReason.LENGTH
    assert scored.usage is not None and scored.usage.completion_tokens == 0
    assert scored.usage.prompt_tokens == len(extended)
    scores = scored.prompt_logprobs
    assert scores is not None and len(scores) == len(extended) and scores[0] is None
    for position, lp in enumerate(scores[1:], start=1):
        assert lp is not None and lp.token_id == extended[position] and lp.logprob <= 0
        assert len(lp.top) == 3 and [t.logprob for t in lp.top] == sorted(
            (t.logprob for t in lp.top), reverse=True
        )
        assert (lp.rank == 1) == (lp.top[0].token_id == lp.token_id)
        assert lp.rank is not None and (lp.rank <= 3) == (lp.token_id in {t.token_id for t in lp.top})
    for offset, want in enumerate(generated.logprobs or []):
        got = scores[len(prompt) + offset]
        assert got is not None and got.token_id == want.token_id
        assert got.logprob == pytest.approx(want.logprob, abs=1e-3)
        assert [t.token_id for t in got.top] == [t.token_id for t in want.top]
        assert [t.logprob for t in got.top] == pytest.approx([t.logprob for t in want.top], abs=1e-3)
        assert got.rank == 1  # greedy tokens are the most likely


async def test_a_long_prompt_is_scored_across_steps_and_then_generates(reproducible_engine, monkeypatch):
    """A prompt longer than one step's logits (and than the batch) is scored in chunks without a gap or a
    shift at their borders; with max_tokens the first delta carries the scores and generation goes on."""
    engine = reproducible_engine
    prompt = engine.tokenize("one two three four five six seven eight nine ten " * 60)
    assert len(prompt) > 2 * PROMPT_LOGITS_PER_STEP
    params = SamplingParams(max_tokens=3, temperature=0, prompt_logprobs=0)
    deltas = [d async for d in engine.generate(prompt, params)]
    assert deltas[0].prompt_logprobs is not None and all(d.prompt_logprobs is None for d in deltas[1:])
    assert sum(len(d.token_ids) for d in deltas) == 3
    scores = deltas[0].prompt_logprobs
    assert len(scores) == len(prompt) and scores[0] is None
    assert [s.token_id for s in scores[1:]] == prompt[1:]
    assert all(s.top == () and math.isfinite(s.logprob) for s in scores[1:])
    # Other chunk borders, same numbers (per-sequence KV streams compute them alike): no position shifts.
    monkeypatch.setattr(scheduler, "PROMPT_LOGITS_PER_STEP", 100)
    rechunked = (await run(engine, prompt, params)).prompt_logprobs
    assert rechunked is not None
    assert [s.logprob for s in rechunked[1:]] == pytest.approx([s.logprob for s in scores[1:]], abs=1e-6)
    # And each score is what generating from the prompt cut there reports (a cut of at most one batch is
    # computed in one pass, as the scored chunks are; one token after a batch would take another kernel).
    for position in (99, 100, 101, 255, 256, 257, 511, 512):
        cut = await run(engine, prompt[:position], SamplingParams(max_tokens=1, temperature=0, logprobs=20))
        assert cut.logprobs is not None
        reported = {t.token_id: t.logprob for t in cut.logprobs[0].top}
        assert scores[position].logprob == pytest.approx(reported[prompt[position]], abs=1e-3)


async def test_a_cached_prefix_is_computed_again_for_its_scores(engine):
    """With prefix caching, a prompt whose prefix is cached still gets every position scored (cached cells
    hold no logits), and reports no cached tokens; the next plain request reuses the cells again."""
    prompt = engine.tokenize(PROMPT + " Berlin. The capital of Italy is")
    await run(engine, prompt, SamplingParams(max_tokens=2, temperature=0))
    again = await run(engine, prompt, SamplingParams(max_tokens=1, temperature=0))
    assert again.usage is not None and again.usage.cached_tokens == len(prompt) - 1
    scored = await run(engine, prompt, SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=1))
    assert scored.usage is not None and scored.usage.cached_tokens == 0
    assert scored.prompt_logprobs is not None and len(scored.prompt_logprobs) == len(prompt)
    assert all(
        s is not None and s.token_id == t for s, t in zip(scored.prompt_logprobs[1:], prompt[1:], strict=True)
    )
    after = await run(engine, prompt, SamplingParams(max_tokens=1, temperature=0))
    assert after.usage is not None and after.usage.cached_tokens == len(prompt) - 1


async def test_scored_and_plain_sequences_share_batches(engine):
    """Sequences that score their prompts run in the same steps as ordinary ones; each gets its own."""
    prompts = [engine.tokenize(f"Question {n}: what is {n} plus {n}? Answer:") for n in range(6)]
    params = [
        SamplingParams(max_tokens=4, temperature=0, prompt_logprobs=2 if n % 2 else None) for n in range(6)
    ]
    results = await asyncio.gather(*(run(engine, p, s) for p, s in zip(prompts, params, strict=True)))
    for n, (prompt, result) in enumerate(zip(prompts, results, strict=True)):
        if n % 2:
            assert result.prompt_logprobs is not None and len(result.prompt_logprobs) == len(prompt)
            assert [s.token_id for s in result.prompt_logprobs[1:]] == prompt[1:]
        else:
            assert result.prompt_logprobs is None
        assert len(result.token_ids) == 4 or result.finish_reason == FinishReason.STOP


def test_score_rows_is_the_log_softmax_read_at_the_target():
    rng = np.random.default_rng(0)
    rows = [rng.normal(size=50).astype(np.float32) for _ in range(70)]  # more than one block of rows
    targets = [int(rng.integers(50)) for _ in rows]
    scores = score_rows(rows, targets, 4, lambda t: bytes([65 + t % 26]))
    for row, target, lp in zip(rows, targets, scores, strict=True):
        x = row.astype(np.float64)
        log_probs = x - (x.max() + np.log(np.exp(x - x.max()).sum()))
        assert lp.token_id == target and lp.logprob == pytest.approx(log_probs[target])
        assert lp.rank == 1 + int((x > x[target]).sum())
        assert [t.token_id for t in lp.top] == list(np.argsort(-x)[:4])
        assert [t.logprob for t in lp.top] == pytest.approx(sorted(log_probs, reverse=True)[:4])
