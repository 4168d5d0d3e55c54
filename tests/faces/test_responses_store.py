"""The Responses API's store of responses: per API key, least recently used dropped first, bounded by a
number of responses and a number of bytes."""

from __future__ import annotations

from llmhost.faces.responses_api.items import MessageItem
from llmhost.faces.responses_api.objects import ReasoningSettings, ResponseObject, TextSettings
from llmhost.faces.responses_api.store import ResponseStore
from tests.scripted_engine import ScriptedEngine, scripted_client


def response(response_id: str) -> ResponseObject:
    return ResponseObject(
        id=response_id,
        created_at=0,
        status="completed",
        error=None,
        incomplete_details=None,
        instructions=None,
        max_output_tokens=None,
        model="m",
        output=[],
        parallel_tool_calls=True,
        previous_response_id=None,
        reasoning=ReasoningSettings(effort=None, summary=None),
        store=True,
        temperature=1.0,
        text=TextSettings(format={"type": "text"}),
        tool_choice="auto",
        tools=[],
        top_p=1.0,
        usage=None,
        user=None,
        metadata={},
    )


def said(text: str) -> list[MessageItem]:
    return [MessageItem(role="user", content=text)]


def test_the_least_recently_used_goes_first_when_the_count_is_reached():
    store = ResponseStore(max_items=2, max_bytes=1 << 20)
    store.put(None, response("a"), None, said("1"))
    store.put(None, response("b"), None, said("2"))
    assert store.get(None, "a") is not None  # now b is the least recently used
    store.put(None, response("c"), None, said("3"))
    assert [r for r in "abc" if store.get(None, r)] == ["a", "c"]


def test_bytes_bound_each_key_and_a_chain_counts_its_whole_conversation():
    probe = ResponseStore(max_items=10, max_bytes=1 << 20)
    probe.put(None, response("a"), None, said("x" * 1000))
    one = probe.get(None, "a")
    assert one is not None and one.num_bytes > 1000
    store = ResponseStore(max_items=10, max_bytes=one.num_bytes * 2 + 100)
    store.put("key-1", response("a"), None, said("x" * 1000))
    first = store.get("key-1", "a")
    store.put("key-1", response("b"), first, said("y"))
    chained = store.get("key-1", "b")
    assert [i.content for i in chained.conversation] == ["x" * 1000, "y"]
    assert chained.num_conversation_bytes > first.num_conversation_bytes > 1000  # the earlier turn again
    store.put("key-1", response("c"), None, said("z" * 1000))  # over the bytes: the oldest go
    assert store.get("key-1", "a") is None and store.get("key-1", "c") is not None
    store.put("key-2", response("a"), None, said("x" * 1000))  # another key has its own room
    assert store.get("key-2", "a") is not None and store.get("key-1", "a") is None


def test_a_response_larger_than_the_store_is_not_kept():
    store = ResponseStore(max_items=10, max_bytes=1000)
    store.put(None, response("small"), None, said("hi"))
    store.put(None, response("big"), None, said("x" * 1000))
    assert store.get(None, "big") is None and store.get(None, "small") is not None


async def test_an_input_longer_than_max_messages_is_refused_before_validation():
    async with scripted_client(ScriptedEngine(), max_messages=2) as client:
        items = [{"role": "user", "content": str(i)} for i in range(3)]
        r = await client.post("/v1/responses", json={"input": items})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
