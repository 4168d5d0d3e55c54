"""The automatic KV layout of the llama.cpp engine: the advisor's rule on a fake clock, saved states moved
between layouts, and switches on the real embedded model with answers that stay greedy-close."""

from __future__ import annotations

import asyncio

import pytest

from llmhost.engines.llamacpp import kv_layout
from llmhost.engines.llamacpp.kv_layout import KvLayoutAdvisor, sharing_ratio
from llmhost.engines.llamacpp.seq_state import SeqState
from tests.conftest import TEST_MAX_MODEL_LEN
from tests.engines.test_prefix_cache import ITEMS, RUBRIC, answer
from tests.greedy import assert_greedy_close

# -- the sharing ratio ------------------------------------------------------------------------------


def test_sequences_that_share_nothing_have_a_ratio_of_one():
    assert sharing_ratio([[1, 2, 3], [4, 5], [6]]) == 1.0
    assert sharing_ratio([]) == 1.0
    assert sharing_ratio([[], [7]]) == 1.0


def test_a_shared_block_counts_once_among_the_distinct_tokens():
    block = list(range(700))
    held = [block + [1000 + 20 * i + j for j in range(20)] for i in range(8)]
    # 8 x 720 tokens held, 700 + 8 x 20 distinct
    assert sharing_ratio(held) == pytest.approx(8 * 720 / 860)
    assert sharing_ratio([block, block]) == 2.0
    # prefixes shared by some of them only: [1,2,3,4], [1,2,3,5], [1,2,9], [8]: 4+4+3+1 held, 1,2,3,4,5,9,8
    assert sharing_ratio([[1, 2, 3, 4], [8], [1, 2, 9], [1, 2, 3, 5]]) == pytest.approx(12 / 7)


# -- the advisor ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def busy(advisor: KvLayoutAdvisor, ratio: float, seconds: float, step_s: float = 0.1, n: int = 8) -> None:
    for _ in range(round(seconds / step_s)):
        advisor.observe(ratio, n, step_s)


def test_streams_switch_to_the_pool_after_a_window_of_shared_prefixes():
    advisor = KvLayoutAdvisor(False, clock=Clock())
    busy(advisor, 6.7, kv_layout.WINDOW_S / 2)
    assert not advisor.should_switch()  # not a whole window yet
    busy(advisor, 6.7, kv_layout.WINDOW_S / 2)
    assert advisor.should_switch()
    advisor.switched()
    assert advisor.unified and advisor.num_switches == 1
    assert not advisor.should_switch()  # what it saw before counts no more


def test_distinct_contexts_never_leave_streams_and_the_pool_goes_back_to_streams_for_them():
    clock = Clock()
    advisor = KvLayoutAdvisor(False, clock=clock)
    busy(advisor, 1.0, 10 * kv_layout.WINDOW_S)
    assert not advisor.should_switch()
    pool = KvLayoutAdvisor(True, clock=clock)
    busy(pool, 1.1, kv_layout.WINDOW_S)
    assert pool.should_switch()


def test_mixed_or_middling_traffic_keeps_the_layout_it_has():
    for unified in (False, True):
        advisor = KvLayoutAdvisor(unified, clock=Clock())
        busy(advisor, 4.5, 3 * kv_layout.WINDOW_S)  # near the break-even of 8 sequences
        assert not advisor.should_switch()
        for _ in range(20):  # half the time shared, half distinct
            advisor.observe(6.0, 8, 0.1)
            advisor.observe(1.0, 8, 0.1)
        assert not advisor.should_switch()


def test_the_window_is_busy_time_weighted_by_how_long_each_step_took():
    advisor = KvLayoutAdvisor(False, clock=Clock())
    # Many quick distinct steps, and the slow prompt steps of a shared block: the time is the block's.
    for _ in range(5):
        advisor.observe(6.7, 8, 0.6)
        busy(advisor, 1.0, 0.1, step_s=0.01)
    assert advisor.should_switch()


def test_the_more_sequences_the_more_they_must_share_for_the_pool_to_pay():
    # Each query in the pool computes over every sequence's cells: at a ratio of 3.4, 8 sequences lose
    # there (measured: 700 shared + 100 distinct tokens each, a ratio of 4.3, ran 20% slower), 4 win.
    assert kv_layout.favours_pool(3.4, 4) and not kv_layout.favours_pool(3.4, 8)
    assert kv_layout.favours_streams(3.4, 8) and not kv_layout.favours_streams(3.4, 4)
    assert kv_layout.favours_pool(6.7, 8)  # a 700-token block + 20 tokens each
    assert kv_layout.favours_streams(1.0, 2) and kv_layout.favours_pool(1.9, 2)  # 2 sharing 90%


def test_switches_are_at_least_an_interval_apart_under_an_alternating_load():
    clock = Clock()
    advisor = KvLayoutAdvisor(False, clock=clock)
    busy(advisor, 6.7, kv_layout.WINDOW_S)
    advisor.switched()
    busy(advisor, 1.0, kv_layout.WINDOW_S)
    assert not advisor.should_switch()  # distinct now, but the last switch was a moment ago
    clock.now += kv_layout.MIN_SWITCH_INTERVAL_S
    assert advisor.should_switch()


# -- saved states between layouts --------------------------------------------------------------------


def make_state(num_streams: int, stream: int | None, block: bytes) -> SeqState:
    """A sequence's state as a context with `num_streams` streams writes it: llama.cpp's header (magic
    word, sequence id), the count, then an empty block (a zero cell count) for every stream but `stream`,
    which holds `block`."""
    out = bytes.fromhex("d83c14af") + (5).to_bytes(4, "little") + num_streams.to_bytes(4, "little")
    for s in range(num_streams):
        out += block if s == stream else bytes(4)
    st = SeqState(len(out))
    st.buffer[: len(out)] = out
    st.size = len(out)
    return st


def raw(st: SeqState) -> bytes:
    return bytes(st.buffer[: st.size])


# A block as llama.cpp writes one: a non-zero cell count first; its data may end in zero bytes.
CELLS = (3).to_bytes(4, "little") + b"\x01\x02meta-and-rows" + bytes(12)


def test_a_state_saved_in_a_stream_is_rewritten_for_the_pool_and_back():
    for stream in (0, 3, 7):
        saved = make_state(8, stream, CELLS)
        assert saved.num_streams == 8
        pooled = saved.for_streams(1)
        assert pooled is not None and raw(pooled) == raw(make_state(1, 0, CELLS))
        back = pooled.for_streams(8)
        assert back is not None and raw(back) == raw(make_state(8, 0, CELLS))


def test_an_empty_state_stays_empty_and_a_state_of_another_shape_is_refused():
    empty = make_state(8, None, b"")
    converted = empty.for_streams(1)
    assert converted is not None and raw(converted) == raw(make_state(1, None, b""))
    # Bytes after the cells where the other streams' empty blocks belong: not a state of one KV cache.
    other = raw(make_state(8, 2, CELLS)) + (1).to_bytes(4, "little")
    st = SeqState(len(other))
    st.buffer[: len(other)] = other
    st.size = len(other)
    assert st.for_streams(1) is None


# -- switches on the real model ---------------------------------------------------------------------

# Four sequences of this block + ~12 tokens + 8 out share much of what they hold (ratios 2.7-3.6).
BLOCK = RUBRIC * 3
DISTINCT = [
    "The history of the printing press begins in",
    "A recipe for bread needs flour, water and",
    "The tallest mountains on Earth are found in",
    "When a comet nears the Sun, its tail",
]


async def _engine(model_path, kv_unified: bool | None = None):
    """The llama.cpp engine with prefix reuse and a host-RAM cache; the KV layout automatic by default."""
    from llmhost.engines.llamacpp.engine import LlamaCppEngine

    eng = LlamaCppEngine(
        str(model_path),
        model_name="smol",
        max_model_len=TEST_MAX_MODEL_LEN,
        max_num_seqs=4,
        threads=1,
        prefix_caching=True,
        prefix_cache_ram_bytes=256 * 2**20,
        kv_unified=kv_unified,
    )
    await eng.start()
    return eng


@pytest.fixture
def quick_switches(monkeypatch):
    """A short window (a round's last steps) and no interval: the rule itself is tested above on a fake
    clock. The rubric rounds favour the pool at every step (4 sequences at ratios 3.4-3.6, 3 at 2.7 once
    the leader has finished), the distinct ones streams (~1)."""
    monkeypatch.setattr(kv_layout, "WINDOW_S", 0.05)
    monkeypatch.setattr(kv_layout, "MIN_SWITCH_INTERVAL_S", 0.0)


async def test_the_engine_switches_layouts_with_the_traffic_and_answers_stay_greedy_close(
    model_path, reproducible_engine, quick_switches
):
    tok = reproducible_engine.tokenize
    rubric = [tok(BLOCK + item, add_special=True) for item in ITEMS[:4]]
    distinct = [tok(text, add_special=True) for text in DISTINCT]
    expected = {id(p): await answer(reproducible_engine, p) for p in rubric + distinct}
    eng = await _engine(model_path)
    try:
        scheduler = eng._scheduler
        assert not scheduler.ctx.config.unified_kv  # streams first

        async def round_of(prompts):
            got = await asyncio.gather(*(answer(eng, p) for p in prompts))
            for prompt, a in zip(prompts, got, strict=True):
                assert_greedy_close(expected[id(prompt)].run, a.run, "answer after a layout switch")
            return got

        await round_of(rubric)  # four sequences sharing the rubric: the pool pays
        assert scheduler.num_layout_switches == 0  # a switch waits for nothing to run
        restored = eng.stats().prefix_cache_ram_restores
        got = await round_of(rubric)
        assert scheduler.num_layout_switches == 1 and scheduler.ctx.config.unified_kv
        assert eng._ctx is scheduler.ctx
        # The rubric came back from host RAM (saved under streams, restored into the pool), not computed.
        assert eng.stats().prefix_cache_ram_restores > restored
        assert all(a.usage.cached_tokens >= len(tok(BLOCK, add_special=True)) - 2 for a in got)

        await round_of(distinct)  # distinct prompts: streams pay again
        await round_of(distinct)
        assert scheduler.num_layout_switches == 2 and not scheduler.ctx.config.unified_kv
        await round_of(rubric)  # the rubric's prefix, saved from the pool, restores into a stream
    finally:
        await eng.close()


async def test_a_set_layout_is_never_switched(model_path, quick_switches):
    for unified in (False, True):
        eng = await _engine(model_path, kv_unified=unified)
        try:
            tok = eng.tokenize
            prompts = [tok(BLOCK + item, add_special=True) for item in ITEMS[:4]]
            for _ in range(2):
                await asyncio.gather(*(answer(eng, p) for p in prompts))
            assert eng._scheduler.num_layout_switches == 0
            assert eng._scheduler.ctx.config.unified_kv is unified
        finally:
            await eng.close()
