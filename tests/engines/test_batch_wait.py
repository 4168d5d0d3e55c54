"""An idle engine waits a little for the clients whose requests just ended (`--batch-wait-ms`), so a burst
of closed-loop clients has its prompts computed in one step; one client alone, or clients that do not
come back, are served without waiting for them (returning_clients.py)."""

from __future__ import annotations

import asyncio

import pytest

from llmhost.engines.returning_clients import ReturningClients
from llmhost.types import SamplingParams
from tests.conftest import TEST_MAX_MODEL_LEN

SHORT = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_new_request_answers_one_ended_request():
    clock = FakeClock()
    returning = ReturningClients(window_s=1.0, clock=clock)
    returning.arrived()  # nothing ended yet: nobody is expected
    assert returning.expected() == 0
    returning.ended(3)
    returning.arrived()
    assert returning.expected() == 2
    returning.arrived(5)  # more arrive than ended: never below zero, and no credit kept
    assert returning.expected() == 0
    returning.ended()
    assert returning.expected() == 1


def test_requests_that_ended_before_the_window_are_not_expected_back():
    clock = FakeClock()
    returning = ReturningClients(window_s=1.0, clock=clock)
    returning.ended(2)
    clock.now += 0.6
    returning.ended()
    assert returning.expected() == 3
    clock.now += 0.5  # the first two ended 1.1 s ago
    assert returning.expected() == 1
    clock.now += 1.0
    assert returning.expected() == 0


async def _engine(model_path, batch_wait_s: float):
    from llmhost.engines.llamacpp.engine import LlamaCppEngine

    engine = LlamaCppEngine(
        str(model_path),
        model_name="smol",
        max_model_len=TEST_MAX_MODEL_LEN,
        max_num_seqs=4,
        threads=1,
        batch_wait_s=batch_wait_s,
    )
    await engine.start()
    return engine


async def _run(engine, prompt: str) -> list[int]:
    tokens: list[int] = []
    async for delta in engine.generate(engine.tokenize(prompt), SHORT):
        tokens += delta.token_ids
    return tokens


def _record_batches(engine) -> list[set[int]]:
    """The sequence ids of each llama_decode's batch, from now on."""
    ctx, batches = engine._ctx, []
    decode = ctx.decode

    def recorded() -> int:
        batch = ctx.batch
        batches.append({batch.raw.seq_id[i][0] for i in range(batch.n_tokens)})
        return decode()

    ctx.decode = recorded
    return batches


async def test_a_burst_of_returning_clients_is_computed_in_one_step(model_path):
    """Four requests end; their clients come back 30 ms apart (each through its own HTTP stack, in a
    server). The engine waits for all four: the first step after them holds every new prompt."""
    engine = await _engine(model_path, batch_wait_s=5.0)
    try:
        await asyncio.gather(*(_run(engine, f"Client {k} asks about the weather.") for k in range(4)))
        batches = _record_batches(engine)

        async def comes_back(k: int) -> list[int]:
            await asyncio.sleep(0.03 * k)
            return await _run(engine, f"Client {k} asks about the sea, the wind and the rain.")

        answers = await asyncio.wait_for(asyncio.gather(*(comes_back(k) for k in range(4))), timeout=60)
        assert [len(a) for a in answers] == [3] * 4
        assert len(batches[0]) == 4, batches[:4]
    finally:
        await engine.close()


async def test_one_client_alone_never_waits(model_path):
    """A lone client's next request answers its own ended one: nothing is expected, nothing waits (with
    a 60 s wait allowed, any wait would run past the timeout)."""
    engine = await _engine(model_path, batch_wait_s=60.0)
    try:
        for turn in range(3):
            assert len(await asyncio.wait_for(_run(engine, f"Turn {turn}: hello"), timeout=30)) == 3
    finally:
        await engine.close()


async def test_clients_that_do_not_come_back_are_waited_for_at_most_the_bound(model_path):
    engine = await _engine(model_path, batch_wait_s=0.5)
    try:
        await asyncio.gather(*(_run(engine, f"Client {k} says goodbye.") for k in range(4)))
        batches = _record_batches(engine)
        assert len(await asyncio.wait_for(_run(engine, "Only one client returns."), timeout=30)) == 3
        assert batches and len(batches[0]) == 1
    finally:
        await engine.close()


@pytest.mark.parametrize("batch_wait_ms", ["0", "250"])
def test_the_setting_reaches_the_llama_cpp_engine(batch_wait_ms, model_path):
    from llmhost.config import Settings
    from llmhost.engines.registry import create_engine
    from llmhost.models.source import resolve_model

    settings = Settings(batch_wait_ms=batch_wait_ms)
    engine = create_engine(settings, resolve_model(str(model_path)), "smol")
    assert engine._batch_wait_s == float(batch_wait_ms) / 1000


@pytest.mark.parametrize("batch_wait_ms", [-1, 10_001, "soon"])
def test_a_bad_setting_is_refused_at_start_up(batch_wait_ms):
    from pydantic import ValidationError

    from llmhost.config import Settings

    with pytest.raises(ValidationError, match="batch_wait_ms"):
        Settings(batch_wait_ms=batch_wait_ms)
