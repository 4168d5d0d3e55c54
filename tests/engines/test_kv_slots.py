"""The slot table's decisions (no model): prefix lookup, which slot a new sequence takes (keeping the
running slots one run, then the least recently used), which running sequence moves into a gap."""

from __future__ import annotations

import random

from llmhost.engines.llamacpp.kv_slots import KvSlotTable, common_prefix_len


def test_common_prefix_len_matches_a_plain_loop():
    rng = random.Random(7)
    for _ in range(300):
        a = [rng.randrange(4) for _ in range(rng.randrange(0, 300))]
        b = a[: rng.randrange(0, len(a) + 1)] + [rng.randrange(4) for _ in range(rng.randrange(0, 200))]
        expected = 0
        while expected < min(len(a), len(b)) and a[expected] == b[expected]:
            expected += 1
        assert common_prefix_len(a, b) == expected


def test_best_source_stops_one_token_short_of_the_whole_prompt():
    table = KvSlotTable(2, reuse_prefixes=True)
    table.slots[1].tokens = [1, 2, 3, 4, 5]
    assert table.best_source([1, 2, 3]) == (table.slots[1], 2)  # the last token is computed for its logits
    assert table.best_source([1, 2, 9, 9]) == (table.slots[1], 2)
    assert table.best_source([7, 2, 3]) == (None, 0)
    assert table.best_source([1, 2, 3, 4, 5, 6], exclude=table.slots[1]) == (None, 0)


def test_best_source_is_off_when_reuse_is_off():
    table = KvSlotTable(2, reuse_prefixes=False)
    table.slots[0].tokens = [1, 2, 3, 4]
    assert table.best_source([1, 2, 3, 4, 5]) == (None, 0)


def test_in_the_pool_take_keeps_a_fully_matching_idle_slot_and_evicts_the_least_recently_used():
    table = KvSlotTable(3, reuse_prefixes=True, keeps_one_run=False)
    for slot, tokens in zip(table.slots, ([1, 2], [3, 4], [5, 6]), strict=True):
        slot.tokens = list(tokens)
        table.release(slot)  # released in order 0, 1, 2: slot 0 is the least recently used
    # The idle source is wholly a prefix of the prompt: take it, nothing is lost.
    assert table.take(table.slots[1], 2) is table.slots[1]
    # A partial match: the source's cells are copied (a tag in the pool), the LRU idle slot is overwritten.
    assert table.take(table.slots[2], 1) is table.slots[0]
    assert table.take(None, 0) is table.slots[2]
    assert table.take(None, 0) is None  # every slot busy
    assert table.num_free == 0


def test_with_streams_an_idle_source_is_taken_in_place_even_for_a_partial_match():
    """A copy into another stream costs the source's rows: the source itself is taken when it may be
    (its cells past the match are saved to host RAM first when worth it)."""
    table = KvSlotTable(3, reuse_prefixes=True)
    for slot, tokens in zip(table.slots, ([1, 2], [3, 4], [5, 6]), strict=True):
        slot.tokens = list(tokens)
        table.release(slot)
    assert table.take(table.slots[2], 1) is table.slots[2]
    assert table.take(table.slots[0], 1) is table.slots[1]  # slot 0 is not next to the run: LRU there


def test_take_prefers_an_empty_slot_over_evicting_a_retained_prefix():
    table = KvSlotTable(3, reuse_prefixes=True)
    table.slots[0].tokens = [1, 2, 3]
    table.release(table.slots[0])
    table.slots[1].is_busy = True
    assert table.take(None, 0) is table.slots[2]
    assert table.slots[0].tokens == [1, 2, 3]


def test_a_new_sequence_keeps_the_running_slots_one_run():
    """llama.cpp runs one forward pass per run of consecutive sequence ids: a new sequence takes a gap
    inside the run of busy slots, else a slot next to it, even when a better prefix sits further away."""
    table = KvSlotTable(6, reuse_prefixes=True)
    for i in (2, 3, 5):
        table.slots[i].is_busy = True
    far = table.slots[0]
    far.tokens = [1, 2, 3]
    assert table.take(far, 3) is table.slots[4]  # the gap, not the idle source at slot 0
    assert table.take(far, 3) is table.slots[1]  # next to the run 2-5 (slot 0 is not)
    assert table.take(far, 3) is far  # next to the run now: taken in place, nothing lost
    assert table.take(None, 0) is None


def test_with_nothing_running_any_slot_may_be_taken_and_an_idle_source_is_taken_in_place():
    table = KvSlotTable(4, reuse_prefixes=True)
    table.slots[3].tokens = [1, 2, 3]
    table.release(table.slots[3])
    assert table.take(table.slots[3], 3) is table.slots[3]


def test_in_the_unified_pool_any_free_slot_will_do_and_gaps_do_not_matter():
    table = KvSlotTable(4, reuse_prefixes=True, keeps_one_run=False)
    for i in (0, 2):
        table.slots[i].is_busy = True
    table.slots[3].tokens = [1, 2, 3]
    assert table.take(table.slots[3], 3) is table.slots[3]  # not next to the run: fine in the pool
    assert table.gap_to_fill() is None


def test_a_gap_in_the_run_is_closed_by_moving_the_end_that_holds_fewer_tokens():
    table = KvSlotTable(6, reuse_prefixes=True)
    for i, n in ((0, 50), (1, 10), (3, 40), (4, 30)):
        table.slots[i].is_busy = True
        table.slots[i].tokens = [7] * n
    assert table.gap_to_fill() == (table.slots[4], table.slots[2])  # 30 tokens at the end < 50 at the start
    table.slots[0].tokens = [7] * 5
    assert table.gap_to_fill() == (table.slots[0], table.slots[2])  # now the start is the cheaper copy
    table.slots[2].is_busy = True
    assert table.gap_to_fill() is None  # one run: 0-4
    table.slots[0].is_busy = False
    assert table.gap_to_fill() is None  # 1-4 is one run too


def test_idle_cells_past_the_budget_are_evicted_least_recently_used_first_after_the_grace():
    """In the unified pool idle cells slow every decode step: past a budget the LRU idle slots go."""
    table = KvSlotTable(4, reuse_prefixes=True, keeps_one_run=False)
    shared = list(range(100))
    table.slots[0].tokens = shared + [1] * 50  # busy: a running sequence
    table.slots[0].is_busy = True
    for slot, tail in zip(table.slots[1:], (300, 200, 100), strict=True):
        slot.tokens = shared + [2 + slot.index] * tail
        table.release(slot)  # slot 1 is the least recently used
    # Own cells: 300 + 200 + 100 (the 100 shared with the running sequence are not counted).
    assert table.idle_to_evict(budget_tokens=600, grace_s=0.0) == []
    assert table.idle_to_evict(budget_tokens=599, grace_s=0.0) == [table.slots[1]]
    assert table.idle_to_evict(budget_tokens=150, grace_s=0.0) == [table.slots[1], table.slots[2]]
    assert table.idle_to_evict(budget_tokens=0, grace_s=3600.0) == []  # nothing idle long enough yet


def test_an_image_key_is_no_token_and_tells_pictures_apart():
    from llmhost.engines.llamacpp.kv_slots import image_key

    cat, dog = image_key(b"\x01" * 32, 20, 5), image_key(b"\x02" * 32, 20, 5)
    assert cat < 0 and dog < 0 and cat != dog
    assert cat == image_key(b"\x01" * 32, 20, 5)
    assert common_prefix_len([1, 2, *[cat] * 20, 3], [1, 2, *[dog] * 20, 3]) == 2  # ends where it starts


def test_positions_after_an_image_advance_by_its_positions_not_its_tokens():
    from llmhost.engines.llamacpp.kv_slots import image_key, position_at

    wide = image_key(b"\x01" * 32, 20, 5)  # 5x4 tokens: M-RoPE advances by the longer side
    flat = image_key(b"\x02" * 32, 3, 3)  # one position per token (no M-RoPE)
    tokens = [7, 8, *[wide] * 20, 9, *[flat] * 3, 10]
    assert [position_at(tokens, i) for i in (0, 1, 2)] == [0, 1, 2]
    assert position_at(tokens, 10) == 2  # inside the image: its first position
    assert position_at(tokens, 22) == 7  # the text after it: 2 + 5
    assert position_at(tokens, 23) == 8  # the second image starts here
    assert position_at(tokens, 26) == 11 and position_at(tokens, 27) == 12  # the end: the next token's
    assert position_at([5, 6, 7], 3) == 3
