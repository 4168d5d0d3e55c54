"""The host-RAM store of evicted prefixes' KV states: matching, covering, the byte bound, LRU order."""

from llmhost.engines.host_prefix_cache import HostPrefixCache


def test_best_is_the_longest_shared_prefix_one_token_short_of_the_prompt():
    cache = HostPrefixCache(max_bytes=1000)
    cache.put([1, 2, 3, 4, 5], b"a" * 10)
    cache.put([1, 2, 9], b"b" * 10)
    entry, n = cache.best([1, 2, 3, 4, 5])
    assert entry is not None and entry.state == b"a" * 10 and n == 4  # the last token is computed
    entry, n = cache.best([1, 2, 9, 9])
    assert entry is not None and entry.state == b"b" * 10 and n == 3
    assert cache.best([7, 8, 9]) == (None, 0)
    assert cache.best([1]) == (None, 0)


def test_a_longer_state_replaces_the_ones_it_extends_and_covers_their_tokens():
    cache = HostPrefixCache(max_bytes=1000)
    cache.put([1, 2, 3], b"x" * 10)
    cache.put([1, 2, 3, 4, 5], b"y" * 20)
    assert [e.tokens for e in cache.entries] == [[1, 2, 3, 4, 5]]
    assert cache.num_bytes == 20
    assert cache.covers([1, 2, 3, 4]) and cache.covers([1, 2, 3, 4, 5])
    assert not cache.covers([1, 2, 3, 4, 5, 6]) and not cache.covers([2, 3])


def test_bytes_stay_within_the_bound_dropping_the_least_recently_used():
    cache = HostPrefixCache(max_bytes=100)
    for i in range(5):
        assert cache.put([i, i, i], bytes(40))
        assert cache.num_bytes <= 100
    assert [e.tokens[0] for e in cache.entries] == [3, 4]
    # Restoring the older one makes it the last to go.
    entry, _ = cache.best([3, 3, 3, 0])
    cache.touch(entry)
    cache.put([9, 9, 9], bytes(40))
    assert sorted(e.tokens[0] for e in cache.entries) == [3, 9]
    assert cache.num_saved == 6 and cache.num_restored == 1


def test_a_state_larger_than_the_bound_is_not_kept_and_a_zero_bound_is_off():
    cache = HostPrefixCache(max_bytes=100)
    cache.put([1, 2], bytes(50))
    assert not cache.put([5, 6, 7], bytes(101))
    assert [e.tokens for e in cache.entries] == [[1, 2]]
    assert not HostPrefixCache(max_bytes=0).is_enabled


def test_discard_forgets_a_state_and_its_bytes():
    cache = HostPrefixCache(max_bytes=100)
    cache.put([1, 2, 3], bytes(30))
    entry, _ = cache.best([1, 2, 3, 4])
    cache.discard(entry)
    assert cache.entries == [] and cache.num_bytes == 0
    cache.discard(entry)  # twice is harmless
