"""The slot table's decisions (no model): prefix lookup, which slot a new sequence takes, LRU eviction."""

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


def test_take_keeps_a_fully_matching_idle_slot_and_evicts_the_least_recently_used():
    table = KvSlotTable(3, reuse_prefixes=True)
    for slot, tokens in zip(table.slots, ([1, 2], [3, 4], [5, 6]), strict=True):
        slot.tokens = list(tokens)
        table.release(slot)  # released in order 0, 1, 2: slot 0 is the least recently used
    # The idle source is wholly a prefix of the prompt: take it, nothing is lost.
    assert table.take(table.slots[1], 2) is table.slots[1]
    # A partial match: the source's cells are copied, the LRU idle slot is overwritten.
    assert table.take(table.slots[2], 1) is table.slots[0]
    assert table.take(None, 0) is table.slots[2]
    assert table.take(None, 0) is None  # every slot busy
    assert table.num_free == 0


def test_take_prefers_an_empty_slot_over_evicting_a_retained_prefix():
    table = KvSlotTable(3, reuse_prefixes=True)
    table.slots[0].tokens = [1, 2, 3]
    table.release(table.slots[0])
    table.slots[1].is_busy = True
    assert table.take(None, 0) is table.slots[2]
    assert table.slots[0].tokens == [1, 2, 3]


def test_idle_cells_past_the_budget_are_evicted_least_recently_used_first_after_the_grace():
    table = KvSlotTable(4, reuse_prefixes=True)
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
