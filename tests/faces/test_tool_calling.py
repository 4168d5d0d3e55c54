"""OpenAI function calling through the chat face.

In-process around a ScriptedEngine (fixed outputs, Qwen3's template) for the shapes: parsed calls,
streamed call deltas, tool_choice, validation, the tool-message round trip; then the official openai
SDK against a real server on the embedded model (SmolLM2, whose template ignores tools).
"""

import json
from pathlib import Path

import openai
import pytest

from llmhost.types import FinishReason
from tests.conftest import TEST_MAX_MODEL_LEN, start_server, stop_server
from tests.faces.test_openai_reasoning import OPENING_TEMPLATE, sse_payloads
from tests.scripted_engine import Script, ScriptedEngine, scripted_client

QWEN3_TEMPLATE = (Path(__file__).parent.parent / "fixtures" / "qwen3_chat_template.jinja").read_text()
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
TOOLS = [WEATHER_TOOL, TIME_TOOL]
ASK = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": TOOLS}
# A call cut awkwardly into deltas: tags and JSON split mid-token.
CALL_PIECES = [
    "I will check.\n<tool",
    '_call>\n{"name": "get_wea',
    'ther", "argu',
    'ments": {"ci',
    'ty": "Par',
    'is"}}\n</tool_c',
    "all>",
]


def chat_engine() -> ScriptedEngine:
    return ScriptedEngine(chat_template=QWEN3_TEMPLATE)


async def test_auto_non_stream_message_has_tool_calls():
    engine = chat_engine()
    engine.queue(CALL_PIECES)
    async with scripted_client(engine) as client:
        r = await client.post("/v1/chat/completions", json=ASK)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] == "I will check."
    [call] = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    prompt = engine.calls[0].prompt_text
    assert "# Tools" in prompt and '"name": "get_weather"' in prompt and '"name": "get_time"' in prompt


async def test_stream_sends_name_first_then_argument_pieces_then_tool_calls_finish():
    engine = chat_engine()
    engine.queue(CALL_PIECES, ["No tools needed", "."])
    async with scripted_client(engine) as client:
        r = await client.post("/v1/chat/completions", json={**ASK, "stream": True, "n": 2})
    assert r.status_code == 200
    payloads = sse_payloads(r.text)
    assert payloads[-1] == "[DONE]"
    content = {0: "", 1: ""}
    calls: dict[int, list] = {0: [], 1: []}
    finishes = {}
    for chunk in payloads[:-1]:
        [choice] = chunk["choices"]
        i, delta = choice["index"], choice["delta"]
        assert i not in finishes, "nothing after a choice's finish_reason"
        content[i] += delta.get("content") or ""
        calls[i] += delta.get("tool_calls") or []
        if choice["finish_reason"]:
            finishes[i] = choice["finish_reason"]
    assert finishes == {0: "tool_calls", 1: "stop"}
    assert content == {0: "I will check.", 1: "No tools needed."}
    assert calls[1] == []
    first, *pieces = calls[0]
    assert first["index"] == 0 and first["type"] == "function" and first["id"].startswith("call_")
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    assert len(pieces) >= 3, "the arguments come in pieces as they are generated"
    assert all(p == {"index": 0, "function": {"arguments": p["function"]["arguments"]}} for p in pieces)
    assert json.loads("".join(p["function"]["arguments"] for p in pieces)) == {"city": "Paris"}


async def test_stream_several_calls_get_their_own_indexes():
    engine = chat_engine()
    two = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>\n'
    engine.queue([two, '<tool_call>\n{"name": "get_wea', *CALL_PIECES[2:]])
    async with scripted_client(engine) as client:
        r = await client.post("/v1/chat/completions", json={**ASK, "stream": True})
    deltas = [d for c in sse_payloads(r.text)[:-1] for d in c["choices"][0]["delta"].get("tool_calls") or []]
    starts = [(d["index"], d["function"]["name"]) for d in deltas if "id" in d]
    assert starts == [(0, "get_time"), (1, "get_weather")]


async def test_tool_choice_none_offers_no_tools_and_parses_nothing():
    engine = chat_engine()
    engine.queue(CALL_PIECES)
    async with scripted_client(engine) as client:
        r = await client.post("/v1/chat/completions", json={**ASK, "tool_choice": "none"})
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    assert choice["message"]["content"] == "".join(CALL_PIECES)
    assert "# Tools" not in engine.calls[0].prompt_text


async def test_named_tool_choice_prefills_the_call_and_returns_it():
    engine = chat_engine()
    engine.queue(['{"city": ', '"Oslo"}}', "\n</tool_call>"])
    named = {"type": "function", "function": {"name": "get_weather"}}
    async with scripted_client(engine) as client:
        r = await client.post("/v1/chat/completions", json={**ASK, "tool_choice": named})
    assert r.status_code == 200, r.text
    prompt = engine.calls[0].prompt_text
    assert prompt.endswith('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": ')
    assert engine.calls[0].params.stop == ("</tool_call>",)  # one named call, then stop
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}


async def test_required_tool_choice_streams_the_prefilled_call():
    engine = chat_engine()
    engine.queue(['get_time", "arguments": {}}', "\n</tool_call>"])
    async with scripted_client(engine) as client:
        r = await client.post("/v1/chat/completions", json={**ASK, "tool_choice": "required", "stream": True})
    prompt = engine.calls[0].prompt_text
    assert prompt.endswith('<|im_start|>assistant\n<tool_call>\n{"name": "')
    assert engine.calls[0].params.stop == ()  # required may make several calls
    chunks = sse_payloads(r.text)[:-1]
    deltas = [d for c in chunks for d in c["choices"][0]["delta"].get("tool_calls") or []]
    assert deltas[0]["function"] == {"name": "get_time", "arguments": ""}
    assert "".join(d["function"]["arguments"] for d in deltas[1:]) == "{}"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert not any(c["choices"][0]["delta"].get("content") for c in chunks)


async def test_required_with_one_tool_prefills_its_name():
    engine = chat_engine()
    engine.queue(['{"city": "Rome"}}\n</tool_call>'])
    async with scripted_client(engine) as client:
        body = {**ASK, "tools": [WEATHER_TOOL], "tool_choice": "required"}
        r = await client.post("/v1/chat/completions", json=body)
    assert engine.calls[0].prompt_text.endswith('{"name": "get_weather", "arguments": ')
    [call] = r.json()["choices"][0]["message"]["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Rome"}'}


async def test_forced_call_closes_a_think_block_the_template_opened():
    engine = ScriptedEngine(chat_template=OPENING_TEMPLATE)
    engine.queue(['{"city": "Rome"}}\n</tool_call>'])
    named = {"type": "function", "function": {"name": "get_weather"}}
    async with scripted_client(engine, reasoning_parser="qwen3") as client:
        r = await client.post("/v1/chat/completions", json={**ASK, "tool_choice": named})
    assert engine.calls[0].prompt_text.endswith(
        '<think>\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": '
    )
    message = r.json()["choices"][0]["message"]
    assert message["reasoning_content"] is None and message["content"] is None
    assert message["tool_calls"][0]["function"]["arguments"] == '{"city": "Rome"}'


async def test_parallel_tool_calls_false_stops_after_the_first_call():
    engine = chat_engine()
    engine.queue([*CALL_PIECES[:-2], 'is"}}\n'])  # cut by the stop string: no end tag
    async with scripted_client(engine) as client:
        r = await client.post("/v1/chat/completions", json={**ASK, "parallel_tool_calls": False})
    assert engine.calls[0].params.stop == ("</tool_call>",)
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert [c["function"]["name"] for c in choice["message"]["tool_calls"]] == ["get_weather"]


async def test_malformed_call_is_plain_content_with_stop():
    engine = chat_engine()
    engine.queue(["<tool_call>\n", "get_weather(Paris)", "\n</tool_call>"])
    async with scripted_client(engine) as client:
        r = await client.post("/v1/chat/completions", json=ASK)
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    assert choice["message"]["content"] == "<tool_call>\nget_weather(Paris)\n</tool_call>"


async def test_cut_by_max_tokens_keeps_length_and_the_text():
    engine = chat_engine()
    engine.queue(Script(CALL_PIECES[:4], FinishReason.LENGTH))
    async with scripted_client(engine) as client:
        r = await client.post("/v1/chat/completions", json=ASK)
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "length" and "tool_calls" not in choice["message"]
    assert (
        choice["message"]["content"].startswith("I will check.") and "get_wea" in choice["message"]["content"]
    )


async def test_thinking_first_then_the_call_with_a_reasoning_parser():
    engine = chat_engine()
    engine.queue(["<think>\nThey want <tool_", "call> weather.\n</think>\n\n<tool", *CALL_PIECES[1:]])
    async with scripted_client(engine, reasoning_parser="qwen3") as client:
        r = await client.post("/v1/chat/completions", json=ASK)
        engine.queue(["<think>\nThey want <tool_", "call> weather.\n</think>\n\n<tool", *CALL_PIECES[1:]])
        s = await client.post("/v1/chat/completions", json={**ASK, "stream": True})
    choice = r.json()["choices"][0]
    assert choice["message"]["reasoning_content"] == "They want <tool_call> weather."
    assert choice["message"]["content"] is None and choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    chunks = sse_payloads(s.text)[:-1]
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks)
    names = [
        d["function"]["name"]
        for c in chunks
        for d in c["choices"][0]["delta"].get("tool_calls") or []
        if "id" in d
    ]
    assert reasoning == "They want <tool_call> weather." and names == ["get_weather"]


async def test_tool_messages_render_back_with_sdk_string_arguments():
    engine = chat_engine()
    engine.queue(["It is 21 °C in Paris."])
    conversation = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": '{"temp_c": 21}'},
    ]
    async with scripted_client(engine) as client:
        r = await client.post("/v1/chat/completions", json={"messages": conversation, "tools": TOOLS})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "It is 21 °C in Paris."},
        "logprobs": None,
        "finish_reason": "stop",
        "stop_reason": None,
    }
    prompt = engine.calls[0].prompt_text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert '<|im_start|>user\n<tool_response>\n{"temp_c": 21}\n</tool_response><|im_end|>' in prompt


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "function": {"description": "x"}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "function"}]}, "tools[0].function"),
        ({"tools": [WEATHER_TOOL, {"type": "function", "function": {"name": ""}}]}, "tools[1].function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
            "tools[0].function.parameters",
        ),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function"}}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": "get_weather"}, None),  # not a list at all: the schema's 400
    ],
)
async def test_invalid_tools_are_400_with_param(extra, param):
    engine = chat_engine()
    async with scripted_client(engine) as client:
        r = await client.post("/v1/chat/completions", json={"messages": ASK["messages"], **extra})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        assert error["param"] == param
    assert engine.calls == []


# -- the real model, through the official SDK --------------------------------------------------------
@pytest.fixture(scope="module")
def sdk(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("tools"), "--max-model-len", str(TEST_MAX_MODEL_LEN))
    yield openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0, timeout=120)
    stop_server(srv)


def test_sdk_named_tool_choice_returns_a_parsable_call(sdk):
    r = sdk.chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=48,
    )
    choice = r.choices[0]
    assert choice.message.tool_calls, choice.message.content
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    # The llama.cpp engine enforces the function's schema on a forced call's arguments.
    arguments = json.loads(call.function.arguments)
    assert set(arguments) >= {"city"} and isinstance(arguments["city"], str)
    assert choice.finish_reason == "tool_calls"


def test_sdk_required_tool_choice_calls_one_of_the_tools_with_valid_arguments(sdk):
    r = sdk.chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=TOOLS,
        tool_choice="required",
        temperature=0,
        max_tokens=48,
    )
    [call] = r.choices[0].message.tool_calls
    arguments = json.loads(call.function.arguments)
    assert call.function.name in ("get_weather", "get_time") and isinstance(arguments, dict)
    if call.function.name == "get_weather":
        assert isinstance(arguments["city"], str)
    assert r.choices[0].finish_reason == "tool_calls"


def test_sdk_stream_named_tool_choice(sdk):
    stream = sdk.chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=48,
        stream=True,
    )
    name, arguments, finish = None, "", None
    for chunk in stream:
        choice = chunk.choices[0]
        for call in choice.delta.tool_calls or []:
            name = call.function.name or name
            arguments += call.function.arguments or ""
        finish = choice.finish_reason or finish
    assert name == "get_weather" and isinstance(json.loads(arguments), dict)
    assert finish == "tool_calls"


def test_sdk_tool_message_round_trip(sdk):
    first = sdk.chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=48,
    )
    call = first.choices[0].message.tool_calls[0]
    answer = sdk.chat.completions.create(
        model="any",
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            first.choices[0].message.model_dump(exclude_none=True),  # arguments as a JSON string
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21, "sky": "clear"}'},
        ],
        tools=TOOLS,
        temperature=0,
        max_tokens=24,
    )
    choice = answer.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    assert choice.message.content or choice.message.tool_calls
