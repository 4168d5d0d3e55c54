"""Affinity keys and the replica choice (llmhost/ray_serve/routing.py): pure functions, no Ray."""

from __future__ import annotations

import json
import random
from collections import Counter

from llmhost.ray_serve.routing import PREFIX_CHARS, affinity_key, choose, rendezvous_order

REPLICAS = ["r1", "r2", "r3", "r4"]


def key(path: str, body: object, **headers: str) -> str | None:
    return affinity_key(path, {k.replace("_", "-"): v for k, v in headers.items()}, json.dumps(body).encode())


def chat(*turns: tuple[str, str]) -> dict:
    return {"model": "m", "messages": [{"role": r, "content": c} for r, c in turns]}


def test_every_turn_of_a_conversation_has_the_key_of_its_first_turn():
    first = chat(("system", "You are terse."), ("user", "Hello!"))
    later = chat(
        ("system", "You are terse."), ("user", "Hello!"), ("assistant", "Hi."), ("user", "And then?")
    )
    assert key("/v1/chat/completions", first) == key("/v1/chat/completions", later) is not None
    other = chat(("system", "You are terse."), ("user", "Something else"))
    assert key("/v1/chat/completions", other) != key("/v1/chat/completions", first)


def test_list_content_and_anthropic_system_prompts_count_as_text():
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hello!"}]}]}
    assert key("/v1/messages", parts) == key("/v1/messages", chat(("user", "Hello!")))
    with_system = {"system": "Be brief.", "messages": [{"role": "user", "content": "Hello!"}]}
    assert key("/v1/messages", with_system) != key("/v1/messages", chat(("user", "Hello!")))


def test_the_simple_api_keys_on_the_first_user_turn_of_its_history():
    first = {"message": "Hello!", "history": []}
    later = {"message": "More", "history": [{"role": "user", "content": "Hello!"}, {"role": "assistant"}]}
    assert key("/api/v1/chat", first) == key("/api/v1/chat/stream", later) is not None


def test_a_session_header_wins_and_trajectories_key_the_code_tool():
    assert key("/v1/chat/completions", chat(("user", "a")), x_session_id="s1") == "session:s1"
    assert key("/anything", {}, x_session_id="s1") == "session:s1"
    body = {"trajectory_ids": ["t7", "t8"], "actions": ["x", "y"]}
    assert key("/get_observation", body) == "trajectory:t7"


def test_long_raw_prompts_key_on_their_start_and_short_ones_and_batches_have_none():
    long_prompt = "x" * PREFIX_CHARS
    assert key("/v1/completions", {"prompt": long_prompt}) == key(
        "/v1/completions", {"prompt": long_prompt + " and then some"}
    )
    assert key("/v1/completions", {"prompt": "short"}) is None
    assert key("/predict", {"prompt": ["a" * PREFIX_CHARS, "b"]}) is None
    assert key("/v1/completions", {"prompt": [1, 2, 3]}) is None


def test_bad_or_huge_bodies_have_no_key():
    assert affinity_key("/v1/chat/completions", {}, b"{not json") is None
    assert affinity_key("/v1/chat/completions", {}, b"[1, 2]") is None
    assert affinity_key("/v1/chat/completions", {}, b"\xff\xfe") is None
    assert affinity_key("/v1/chat/completions", {}, b"") is None
    assert affinity_key("/v1/chat/completions", {}, b" " * (2 << 20)) is None


def test_rendezvous_order_is_stable_and_moves_only_the_keys_of_a_removed_replica():
    keys = [f"k{i}" for i in range(400)]
    before = {k: rendezvous_order(k, REPLICAS)[0] for k in keys}
    assert before == {k: rendezvous_order(k, list(reversed(REPLICAS)))[0] for k in keys}  # order-free
    assert set(Counter(before.values())) == set(REPLICAS)  # every replica gets some keys
    after = {k: rendezvous_order(k, ["r1", "r2", "r4"])[0] for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert moved and all(before[k] == "r3" for k in moved)


def test_a_key_prefers_its_replica_until_it_is_too_busy():
    preferred = rendezvous_order("session:a", REPLICAS)[0]
    idle = dict.fromkeys(REPLICAS, 0)
    ranks = choose("session:a", None, REPLICAS, idle, max_imbalance=4, rng=random.Random(0))
    assert ranks[0] == [preferred] and preferred not in ranks[1]
    busy = {**idle, preferred: 4}
    ranks = choose("session:a", None, REPLICAS, busy, max_imbalance=4, rng=random.Random(0))
    assert len(ranks) == 1 and len(ranks[0]) == 2  # the power of two choices over all
    unknown = dict.fromkeys(REPLICAS)  # nothing heard yet: keep the affinity
    assert choose("session:a", None, REPLICAS, unknown, max_imbalance=4)[0] == [preferred]


def test_no_key_is_the_power_of_two_choices_and_a_pinned_replica_comes_first():
    ranks = choose(None, None, REPLICAS, {}, max_imbalance=4, rng=random.Random(1))
    assert len(ranks) == 1 and len(set(ranks[0])) == 2
    assert choose("session:a", "r3", REPLICAS, {}, max_imbalance=4)[0] == ["r3"]
    assert choose(None, "gone", REPLICAS, {}, max_imbalance=4)[0] != ["gone"]  # falls back to load
    assert choose("k", None, ["r1"], {}, max_imbalance=4) == [["r1"]]
    assert choose("k", None, [], {}, max_imbalance=4) == []
