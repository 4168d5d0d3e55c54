"""`--tool-call-parser qwen3_coder` on the real embedded model: SmolLM2's template ignores tools, so the
server describes them in Qwen3-Coder's XML form itself, pre-fills a forced call in that form and, the
llama.cpp engine enforcing grammars, constrains the rest of it; what the model writes must read back as
a call whose arguments have the schema's types, through the openai and anthropic SDKs.

The parameters are typed (an integer and an enum): a free-text string value ends only when the model
writes `</parameter>`, which a 135M model that never saw this format does not reliably do."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from tests.conftest import TEST_MAX_MODEL_LEN, start_server, stop_server

THERMOSTAT = {
    "name": "set_thermostat",
    "description": "Set the room thermostat",
    "parameters": {
        "type": "object",
        "properties": {"celsius": {"type": "integer"}, "mode": {"enum": ["heat", "cool", "off"]}},
        "required": ["celsius", "mode"],
    },
}
ASK = [{"role": "user", "content": "Heat the room to 21 degrees."}]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    srv = start_server(
        tmp_path_factory.mktemp("xml-tools"),
        "--max-model-len",
        str(TEST_MAX_MODEL_LEN),
        "--tool-call-parser",
        "qwen3_coder",
    )
    yield srv.url
    stop_server(srv)


def check_arguments(arguments: dict) -> None:
    assert set(arguments) == {"celsius", "mode"}
    assert isinstance(arguments["celsius"], int) and arguments["mode"] in ("heat", "cool", "off")


def test_openai_forced_call_in_the_xml_form_parses(url):
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
    r = sdk.chat.completions.create(
        model="any",
        messages=ASK,
        tools=[{"type": "function", "function": THERMOSTAT}],
        tool_choice={"type": "function", "function": {"name": "set_thermostat"}},
        temperature=0,
        max_tokens=64,
    )
    choice = r.choices[0]
    assert choice.message.tool_calls, choice.message.content
    [call] = choice.message.tool_calls
    assert call.function.name == "set_thermostat"
    check_arguments(json.loads(call.function.arguments))
    assert choice.finish_reason == "tool_calls" and choice.message.content is None


def test_anthropic_streamed_forced_tool_in_the_xml_form_parses(url):
    sdk = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, timeout=300)
    tool = {"name": THERMOSTAT["name"], "input_schema": THERMOSTAT["parameters"]}
    with sdk.messages.stream(
        model="any",
        max_tokens=64,
        messages=ASK,
        tools=[tool],
        tool_choice={"type": "tool", "name": "set_thermostat"},
        extra_body={"temperature": 0},
    ) as stream:
        message = stream.get_final_message()
    [use] = message.content
    assert use.type == "tool_use" and use.name == "set_thermostat"
    check_arguments(use.input)
    assert message.stop_reason == "tool_use"
