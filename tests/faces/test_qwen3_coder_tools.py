"""Qwen3-Coder's XML tool calls through the official SDKs (openai and anthropic), in-process around a
ScriptedEngine that writes the XML form, on a server given a Qwen3-Coder-style `--chat-template` file and
the default `--tool-call-parser auto`: the server must see the template's format and read the calls in
every face, whole and streamed, forced or not. The real model writing a forced XML call is in
tests/e2e/test_tool_call_formats.py."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import httpx2
import openai

from tests.scripted_engine import ScriptedEngine, scripted_client

TEMPLATE_FILE = Path(__file__).parent.parent / "fixtures" / "qwen3_coder_chat_template.jinja"
RUN = {
    "type": "function",
    "function": {
        "name": "run_command",
        "description": "Run a shell command",
        "parameters": {
            "type": "object",
            "properties": {
                "command": {"type": "string"},
                "timeout_s": {"type": "integer"},
                "env": {"type": "object"},
            },
            "required": ["command"],
        },
    },
}
TOOLS = [RUN, {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}]
COMMAND = 'grep -n "x" a.py\nwc -l a.py'
ARGS = {"command": COMMAND, "timeout_s": 30, "env": {"LANG": "C"}}
# The XML call, cut awkwardly into deltas: tags, names and values split mid-way.
PIECES = [
    "I'll run it.\n\n<tool_",
    "call>\n<function=run_com",
    "mand>\n<parameter=command>\ngrep -n",
    ' "x" a.py\nwc -l a.py\n</param',
    "eter>\n<parameter=timeout_s>\n3",
    '0\n</parameter>\n<parameter=env>\n{"LANG":',
    ' "C"}\n</parameter>\n</function>\n</tool_call>',
]
ASK = [{"role": "user", "content": "Count the lines of a.py"}]


def xml_engine() -> ScriptedEngine:
    return ScriptedEngine()  # its own template is ChatML; the server is given the XML one


@contextlib.asynccontextmanager
async def app_http(engine: ScriptedEngine) -> AsyncIterator[httpx2.AsyncClient]:
    """An HTTP client on an in-process app given the XML template (the SDKs speak httpx2)."""
    async with scripted_client(engine, chat_template=str(TEMPLATE_FILE)) as client:
        transport = httpx2.ASGITransport(app=client.app)  # type: ignore[attr-defined]
        async with httpx2.AsyncClient(transport=transport, base_url="http://scripted") as http:
            yield http


@contextlib.asynccontextmanager
async def openai_sdk(engine: ScriptedEngine) -> AsyncIterator[openai.AsyncOpenAI]:
    async with app_http(engine) as http:
        yield openai.AsyncOpenAI(
            base_url="http://scripted/v1", api_key="unused", http_client=http, max_retries=0
        )


@contextlib.asynccontextmanager
async def anthropic_sdk(engine: ScriptedEngine) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with app_http(engine) as http:
        yield anthropic.AsyncAnthropic(
            base_url="http://scripted", api_key="unused", http_client=http, max_retries=0
        )


async def test_openai_reads_the_xml_call_whole():
    engine = xml_engine()
    engine.queue(PIECES)
    async with openai_sdk(engine) as sdk:
        r = await sdk.chat.completions.create(model="any", messages=ASK, tools=TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll run it."
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.function.name == "run_command"
    assert json.loads(call.function.arguments) == ARGS
    prompt = engine.calls[0].prompt_text
    assert "<name>run_command</name>" in prompt and "<function=example_function_name>" in prompt


async def test_openai_streams_the_name_first_then_argument_pieces():
    engine = xml_engine()
    engine.queue(PIECES)
    async with openai_sdk(engine) as sdk:
        stream = await sdk.chat.completions.create(model="any", messages=ASK, tools=TOOLS, stream=True)
        chunks = [chunk async for chunk in stream]
    content, name, call_id, arguments, finish = "", None, None, [], None
    for chunk in chunks:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for piece in delta.tool_calls or []:
            assert piece.index == 0
            if piece.function.name is not None:
                assert name is None and not arguments, "the name comes first, once"
                name, call_id = piece.function.name, piece.id
            elif piece.function.arguments:
                arguments.append(piece.function.arguments)
        finish = chunk.choices[0].finish_reason or finish
    assert content == "I'll run it." and name == "run_command" and call_id.startswith("call_")
    assert len(arguments) > 2  # pieces as the model wrote them, not one lump at the end
    assert json.loads("".join(arguments)) == ARGS
    assert finish == "tool_calls"


async def test_openai_forced_call_is_prefilled_in_the_xml_form():
    engine = xml_engine()
    engine.queue(["<parameter=command>\nls\n</parameter>\n</function>"])
    choice = {"type": "function", "function": {"name": "run_command"}}
    async with openai_sdk(engine) as sdk:
        r = await sdk.chat.completions.create(model="any", messages=ASK, tools=TOOLS, tool_choice=choice)
    assert engine.calls[0].prompt_text.endswith(
        "<|im_start|>assistant\n<tool_call>\n<function=run_command>\n"
    )
    assert "</tool_call>" in engine.calls[0].params.stop  # one call: stop at its end
    [call] = r.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("run_command", {"command": "ls"})
    assert r.choices[0].message.content is None and r.choices[0].finish_reason == "tool_calls"


async def test_openai_required_lets_the_model_name_the_function():
    engine = xml_engine()
    engine.queue(["now>\n</function>"])
    async with openai_sdk(engine) as sdk:
        r = await sdk.chat.completions.create(model="any", messages=ASK, tools=TOOLS, tool_choice="required")
    assert engine.calls[0].prompt_text.endswith("<tool_call>\n<function=")
    assert [(c.function.name, c.function.arguments) for c in r.choices[0].message.tool_calls] == [
        ("now", "{}")
    ]


async def test_openai_history_with_calls_renders_through_the_xml_template():
    engine = xml_engine()
    engine.queue(["It printed 12."])
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "run_command", "arguments": json.dumps(ARGS)},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "12 a.py"},
    ]
    async with openai_sdk(engine) as sdk:
        r = await sdk.chat.completions.create(model="any", messages=history, tools=TOOLS)
    assert r.choices[0].message.content == "It printed 12."
    prompt = engine.calls[0].prompt_text
    assert (
        "<tool_call>\n<function=run_command>\n<parameter=command>\n" + COMMAND + "\n</parameter>\n"
        '<parameter=timeout_s>\n30\n</parameter>\n<parameter=env>\n{"LANG": "C"}\n</parameter>\n'
        "</function>\n</tool_call>"
    ) in prompt
    assert "<tool_response>\n12 a.py\n</tool_response>" in prompt


ANTHROPIC_TOOLS = [
    {
        "name": "run_command",
        "description": "Run a shell command",
        "input_schema": RUN["function"]["parameters"],
    }
]


async def test_anthropic_reads_the_xml_call_whole_and_streamed():
    engine = xml_engine()
    engine.queue(PIECES, PIECES)
    kwargs = {"model": "any", "max_tokens": 256, "messages": ASK, "tools": ANTHROPIC_TOOLS}
    async with anthropic_sdk(engine) as sdk:
        whole = await sdk.messages.create(**kwargs)
        async with sdk.messages.stream(**kwargs) as stream:
            events = [event async for event in stream]
            streamed = await stream.get_final_message()
    for message in (whole, streamed):
        text, use = message.content
        assert text.type == "text" and text.text == "I'll run it."
        assert use.type == "tool_use" and use.name == "run_command" and use.id.startswith("toolu_")
        assert use.input == ARGS
        assert message.stop_reason == "tool_use"
    partial = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert len(partial) > 2 and json.loads("".join(partial)) == ARGS


async def test_anthropic_forced_tool_is_prefilled_in_the_xml_form():
    engine = xml_engine()
    engine.queue(
        ["<parameter=command>\nls\n</parameter>\n<parameter=timeout_s>\n5\n</parameter>\n</function>"]
    )
    async with anthropic_sdk(engine) as sdk:
        message = await sdk.messages.create(
            model="any",
            max_tokens=64,
            messages=ASK,
            tools=ANTHROPIC_TOOLS,
            tool_choice={"type": "tool", "name": "run_command"},
        )
    assert engine.calls[0].prompt_text.endswith("<tool_call>\n<function=run_command>\n")
    [use] = message.content
    assert use.input == {"command": "ls", "timeout_s": 5} and message.stop_reason == "tool_use"
