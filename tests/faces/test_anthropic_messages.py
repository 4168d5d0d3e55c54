"""The Anthropic Messages face, in-process around a ScriptedEngine (fixed outputs, Qwen3's template):
what the conversation becomes in the prompt, what the output becomes in content blocks and stream
events, stop reasons and error shapes; partly through the official `anthropic` SDK (in-process too).
The same SDK against a real server is in tests/e2e/test_anthropic_sdk.py."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import anthropic
import httpx2
import pytest

from llmhost.errors import EngineError
from llmhost.faces.anthropic.responses import MessageUsage
from llmhost.types import Delta, SamplingParams, Usage
from tests.faces.test_openai_reasoning import OPENING_TEMPLATE, QWEN3_TEMPLATE
from tests.faces.test_tool_calling import CALL_PIECES
from tests.scripted_engine import Script, ScriptedEngine, scripted_client

HI = {"model": "scripted", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}
THINKING = ["<thi", "nk>\nThe user ", "says hi.\n</th", "ink>\n\n", "Hello", "!"]
WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ASK_WEATHER = {**HI, "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER]}
# A 1x1 PNG, as the SDK's image blocks carry it.
PNG_SOURCE = {
    "type": "base64",
    "media_type": "image/png",
    "data": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC",
}


def qwen3_engine() -> ScriptedEngine:
    return ScriptedEngine(chat_template=QWEN3_TEMPLATE)


def sse_events(text: str) -> list[tuple[str, dict]]:
    """`(event name, decoded data)` of each event of an SSE body; the name must repeat the data's type."""
    out = []
    for chunk in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines() if not line.startswith(":"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


@contextlib.asynccontextmanager
async def sdk_client(engine: ScriptedEngine, **settings: object) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """The official SDK on an in-process app (the SDK speaks httpx2, so it gets a transport of its own)."""
    async with scripted_client(engine, **settings) as client:
        transport = httpx2.ASGITransport(app=client.app)  # type: ignore[attr-defined]
        http = httpx2.AsyncClient(transport=transport, base_url="http://scripted")
        async with anthropic.AsyncAnthropic(
            base_url="http://scripted", api_key="unused", http_client=http, max_retries=0
        ) as sdk:
            yield sdk


# -- the conversation in the prompt -------------------------------------------------------------------
async def test_tool_use_and_tool_result_round_trip_into_the_prompt():
    engine = qwen3_engine()
    conversation = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should look it up.", "signature": "sig"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "18C"}],
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    system = [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=1; cch=abc;"},
        {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
    ]
    body = {**ASK_WEATHER, "system": system, "messages": conversation, "metadata": {"user_id": "u"}}
    async with scripted_client(engine) as client:
        r = await client.post(
            "/v1/messages?beta=true", json=body, headers={"anthropic-version": "2023-06-01"}
        )
    assert r.status_code == 200, r.text
    prompt = engine.calls[0].prompt_text
    assert prompt.startswith("<|im_start|>system\nYou are terse.\n\n# Tools")  # the billing line is dropped
    assert '"name": "get_weather"' in prompt and '"parameters": {"type": "object"' in prompt
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert f"<|im_start|>assistant\nLet me check.\n{call}<|im_end|>" in prompt
    assert (
        "<tool_response>\n18C\n</tool_response><|im_end|>\n<|im_start|>user\nAnd tomorrow?<|im_end|>"
        in prompt
    )


async def test_a_last_assistant_message_is_continued():
    engine = qwen3_engine()
    engine.queue(["B)"])
    messages = [
        {"role": "user", "content": "Greek name for Sun? (A) Sol (B) Helios"},
        {"role": "assistant", "content": "The best answer is ("},
    ]
    async with scripted_client(engine) as client:
        r = await client.post("/v1/messages", json={**HI, "messages": messages})
    assert r.json()["content"] == [{"type": "text", "text": "B)"}]
    assert engine.calls[0].prompt_text.endswith("<|im_start|>assistant\nThe best answer is (")


async def test_count_tokens_counts_the_prompt_messages_would_send():
    engine = qwen3_engine()
    body = {**ASK_WEATHER, "system": "Be brief.", "thinking": {"type": "disabled"}}
    async with scripted_client(engine) as client:
        counted = await client.post(
            "/v1/messages/count_tokens", json={k: v for k, v in body.items() if k != "max_tokens"}
        )
        r = await client.post("/v1/messages", json=body)
    assert counted.status_code == 200, counted.text
    # The scripted tokenizer is one token a byte.
    assert counted.json() == {"input_tokens": len(engine.calls[0].prompt_text.encode())}
    assert r.json()["usage"]["input_tokens"] == counted.json()["input_tokens"]
    assert not engine.calls[1:], "count_tokens generates nothing"


# -- thinking --------------------------------------------------------------------------------------------
async def test_thinking_enabled_splits_the_thinking_into_its_block():
    engine = qwen3_engine()
    engine.queue(THINKING)
    async with scripted_client(engine) as client:
        r = await client.post(
            "/v1/messages", json={**HI, "thinking": {"type": "enabled", "budget_tokens": 1024}}
        )
    assert r.status_code == 200, r.text
    message = r.json()
    assert message["content"] == [
        {"type": "thinking", "thinking": "The user says hi.", "signature": ""},
        {"type": "text", "text": "Hello!"},
    ]
    assert message["stop_reason"] == "end_turn" and message["id"].startswith("msg_")
    assert message["usage"]["output_tokens"] == len(THINKING)


async def test_thinking_disabled_renders_with_thinking_off_and_leaves_text_alone():
    engine = qwen3_engine()
    engine.queue(["<think>x</think>", "Hi"])
    async with scripted_client(engine) as client:
        r = await client.post("/v1/messages", json={**HI, "thinking": {"type": "disabled"}})
    assert engine.calls[0].prompt_text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert r.json()["content"] == [{"type": "text", "text": "<think>x</think>Hi"}]  # no parser asked


async def test_sdk_streams_thinking_then_text_and_accumulates_the_same_message():
    engine = qwen3_engine()
    engine.queue(THINKING, THINKING)
    kwargs = {**HI, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    async with sdk_client(engine) as sdk:
        whole = await sdk.messages.create(**kwargs)
        async with sdk.messages.stream(**kwargs) as stream:
            texts = [text async for text in stream.text_stream]
            streamed = await stream.get_final_message()
    assert "".join(texts) == "Hello!"
    assert [b.type for b in streamed.content] == ["thinking", "text"]
    assert [b.model_dump(exclude={"parsed_output"}) for b in streamed.content] == [
        b.model_dump() for b in whole.content
    ]
    assert streamed.stop_reason == whole.stop_reason == "end_turn"
    assert streamed.usage.input_tokens == whole.usage.input_tokens
    assert streamed.usage.output_tokens == whole.usage.output_tokens


async def test_the_servers_reasoning_parser_splits_without_a_thinking_field():
    engine = ScriptedEngine(chat_template=OPENING_TEMPLATE)  # the prompt opens the think block
    engine.queue(["Pondering", ".</think>", "\n\nHi"])
    async with scripted_client(engine, reasoning_parser="qwen3") as client:
        r = await client.post("/v1/messages", json=HI)
    assert r.json()["content"] == [
        {"type": "thinking", "thinking": "Pondering.", "signature": ""},
        {"type": "text", "text": "Hi"},
    ]


# -- tools -----------------------------------------------------------------------------------------------
async def test_a_tool_call_becomes_a_tool_use_block():
    engine = qwen3_engine()
    engine.queue(CALL_PIECES)
    async with scripted_client(engine) as client:
        r = await client.post("/v1/messages", json=ASK_WEATHER)
    message = r.json()
    assert message["stop_reason"] == "tool_use"
    text, use = message["content"]
    assert text == {"type": "text", "text": "I will check."}
    assert use["type"] == "tool_use" and use["id"].startswith("toolu_")
    assert (use["name"], use["input"]) == ("get_weather", {"city": "Paris"})


async def test_stream_event_order_with_a_tool_call():
    engine = qwen3_engine()
    engine.queue(CALL_PIECES)
    async with scripted_client(engine) as client:
        r = await client.post("/v1/messages", json={**ASK_WEATHER, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert all(name == data["type"] for name, data in events)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    starts = [(d["index"], d["content_block"]["type"]) for n, d in events if n == "content_block_start"]
    stops = [d["index"] for n, d in events if n == "content_block_stop"]
    assert starts == [(0, "text"), (1, "tool_use")] and stops == [0, 1]
    # Each block's deltas come between its start and its stop.
    collapsed = [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]]
    assert collapsed == [
        "message_start",
        *["content_block_start", "content_block_delta", "content_block_stop"] * 2,
        "message_delta",
        "message_stop",
    ]
    partial = "".join(
        d["delta"]["partial_json"] for n, d in events if n == "content_block_delta" and d["index"] == 1
    )
    assert json.loads(partial) == {"city": "Paris"}
    [delta] = [d for n, d in events if n == "message_delta"]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}


async def test_forced_tool_choice_prefills_the_call_and_stops_after_it():
    engine = qwen3_engine()
    engine.queue(['{"city": "Paris"}', "}"])
    body = {**ASK_WEATHER, "tool_choice": {"type": "tool", "name": "get_weather"}}
    async with sdk_client(engine) as sdk:
        message = await sdk.messages.create(**body)
    assert engine.calls[0].prompt_text.endswith('<tool_call>\n{"name": "get_weather", "arguments": ')
    assert "</tool_call>" in engine.calls[0].params.stop
    [use] = message.content
    assert use.type == "tool_use" and use.input == {"city": "Paris"}
    assert message.stop_reason == "tool_use"


async def test_a_forced_call_after_an_open_think_block_is_no_thinking():
    engine = ScriptedEngine(chat_template=OPENING_TEMPLATE)
    engine.queue(['{"city": "Paris"}}'])
    body = {**ASK_WEATHER, "tool_choice": {"type": "any"}, "stream": True}
    async with scripted_client(engine, reasoning_parser="qwen3") as client:
        r = await client.post("/v1/messages", json=body)
    assert engine.calls[0].prompt_text.endswith(
        '<think>\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": '
    )
    events = sse_events(r.text)
    assert [d["content_block"]["type"] for n, d in events if n == "content_block_start"] == ["tool_use"]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_tool_choice_none_offers_no_tools():
    engine = qwen3_engine()
    async with scripted_client(engine) as client:
        r = await client.post("/v1/messages", json={**ASK_WEATHER, "tool_choice": {"type": "none"}})
    assert r.status_code == 200 and "get_weather" not in engine.calls[0].prompt_text


# -- sampling and stop reasons ---------------------------------------------------------------------------
class StopStringEngine(ScriptedEngine):
    """Reports its script's end as the request's first stop string (ScriptedEngine matches none)."""

    def generate(
        self, prompt_tokens: Sequence[int], params: SamplingParams, request_id: str | None = None
    ) -> AsyncIterator[Delta]:
        return self._mark(super().generate(prompt_tokens, params, request_id), params.stop)

    async def _mark(self, deltas: AsyncIterator[Delta], stop: tuple[str, ...]) -> AsyncIterator[Delta]:
        async for delta in deltas:
            yield replace(delta, stop_reason=stop[0]) if delta.finish_reason and stop else delta


async def test_stop_reasons_and_sampling():
    engine = StopStringEngine(chat_template=QWEN3_TEMPLATE)
    engine.queue(["a", "b", "c"], ["a"], Script(["a"]))
    async with scripted_client(engine) as client:
        cut = (await client.post("/v1/messages", json={**HI, "max_tokens": 2})).json()
        body = {**HI, "stop_sequences": ["END"], "temperature": 0.5, "top_p": 0.9, "top_k": 5}
        stopped = (await client.post("/v1/messages", json=body)).json()
        ended = (await client.post("/v1/messages", json=HI)).json()
    assert (cut["stop_reason"], cut["content"]) == ("max_tokens", [{"type": "text", "text": "ab"}])
    assert (stopped["stop_reason"], stopped["stop_sequence"]) == ("stop_sequence", "END")
    assert (ended["stop_reason"], ended["stop_sequence"]) == ("end_turn", None)
    params = engine.calls[1].params
    assert (params.stop, params.temperature, params.top_p, params.top_k, params.max_tokens) == (
        ("END",),
        0.5,
        0.9,
        5,
        64,
    )


# -- errors ----------------------------------------------------------------------------------------------
BAD = [
    ("wrong type", {**HI, "max_tokens": "ten"}, "max_tokens"),
    ("missing max_tokens", {k: v for k, v in HI.items() if k != "max_tokens"}, "max_tokens"),
    ("temperature over 1", {**HI, "temperature": 1.5}, "temperature"),
    ("unknown block", {**HI, "messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages"),
    (
        "image block without a source",
        {**HI, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
        "messages",
    ),
    (
        "image block to a model that reads text only",
        {**HI, "messages": [{"role": "user", "content": [{"type": "image", "source": PNG_SOURCE}]}]},
        "reads text only and cannot take images",
    ),
    (
        "image block in a tool result",
        {
            **HI,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "content": [{"type": "image", "source": PNG_SOURCE}],
                        }
                    ],
                }
            ],
        },
        "'image' blocks are accepted in user content only",
    ),
    ("server tool", {**HI, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
    ("strict tool", {**HI, "tools": [{**WEATHER, "strict": True}]}, "strict"),
    (
        "format",
        {**HI, "output_config": {"format": {"type": "json_schema", "schema": {}}}},
        "output_config.format",
    ),
    ("mcp", {**HI, "mcp_servers": [{"type": "url", "url": "http://x", "name": "x"}]}, "mcp_servers"),
    ("choice without tools", {**HI, "tool_choice": {"type": "any"}}, "tool_choice"),
    ("unknown tool", {**ASK_WEATHER, "tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice.name"),
    (
        "tool_use from the user",
        {
            **HI,
            "messages": [
                {"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}
            ],
        },
        "'tool_use' blocks are not allowed in user content",
    ),
]


@pytest.mark.parametrize(("name", "body", "named"), BAD, ids=[c[0] for c in BAD])
async def test_bad_requests_are_400_in_anthropic_shape(name, body, named):
    async with scripted_client(qwen3_engine()) as client:
        r = await client.post("/v1/messages", json=body)
    assert r.status_code == 400, r.text
    error = r.json()
    assert set(error) == {"type", "error"} and error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error" and named in error["error"]["message"]


async def test_claude_code_hints_are_accepted():
    engine = qwen3_engine()
    body = {
        **HI,
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "service_tier": "auto",
        "messages": [{"role": "ctx", "content": "some context"}, {"role": "user", "content": "Hi"}],
    }
    async with scripted_client(engine) as client:
        r = await client.post("/v1/messages", json=body)
    assert r.status_code == 200, r.text


async def test_sdk_raises_its_own_errors():
    async with sdk_client(qwen3_engine(), served_names=["smol"], served_model_name=["smol"]) as sdk:
        with pytest.raises(anthropic.NotFoundError) as err:
            await sdk.messages.create(**{**HI, "model": "claude-x"})
        assert err.value.body["error"]["type"] == "not_found_error"
        with pytest.raises(anthropic.BadRequestError):
            await sdk.messages.count_tokens(model="smol", messages=[])


async def test_an_error_after_the_start_is_an_error_event():
    engine = qwen3_engine()
    engine.queue(["Hel", EngineError("the engine died")])
    async with scripted_client(engine) as client:
        r = await client.post("/v1/messages", json={**HI, "stream": True})
    name, data = sse_events(r.text)[-1]
    assert name == "error"
    assert data == {"type": "error", "error": {"type": "api_error", "message": "the engine died"}}
    engine.queue(["Hel", EngineError("the engine died")])
    async with sdk_client(engine) as sdk:
        with pytest.raises(anthropic.APIStatusError):
            async with sdk.messages.stream(**HI) as stream:
                await stream.get_final_message()


async def test_x_api_key_is_accepted_and_a_refusal_has_anthropic_shape():
    async with scripted_client(qwen3_engine(), api_key=["sekret"]) as client:
        refused = await client.post("/v1/messages", json=HI)
        allowed = await client.post("/v1/messages", json=HI, headers={"x-api-key": "sekret"})
        bearer = await client.post(
            "/v1/chat/completions", json=HI, headers={"authorization": "Bearer sekret"}
        )
        wrong = await client.post("/v1/messages", json=HI, headers={"x-api-key": "nope"})
    assert refused.status_code == wrong.status_code == 401
    assert refused.json()["type"] == "error" and "x-api-key" in refused.json()["error"]["message"]
    assert allowed.status_code == bearer.status_code == 200


def test_usage_counts_cache_reads_apart_from_input():
    usage = MessageUsage.from_totals(Usage(100, 5, cached_tokens=60))
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (40, 60, 5)
    assert MessageUsage.from_totals(Usage(100, 5)).cache_read_input_tokens is None


async def test_a_conversation_longer_than_max_messages_is_refused_before_validation():
    from tests.scripted_engine import ScriptedEngine, scripted_client

    engine = ScriptedEngine()
    async with scripted_client(engine, max_messages=4) as client:
        r = await client.post(
            "/v1/messages",
            json={"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}] * 5},
        )
    assert r.status_code == 400 and r.json()["type"] == "error"
    assert (
        "'messages' has 5 entries" in r.json()["error"]["message"] and not engine.calls
    )  # before validation
