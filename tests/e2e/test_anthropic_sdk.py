"""End-to-end through the official `anthropic` SDK against a real llmhost server on the embedded model."""

from __future__ import annotations

import anthropic
import pytest

from tests.e2e.test_auth import locked_server  # noqa: F401 (a server started with --api-key key-one)

pytestmark = pytest.mark.e2e

# The SDK (2.x) has no sampling arguments any more: they travel as extra body fields.
GREEDY = {"temperature": 0}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def client(server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


def test_create_answers_a_message(client):
    message = client.messages.create(model="smol", max_tokens=16, messages=QUESTION, extra_body=GREEDY)
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == "smol"
    [block] = message.content
    assert block.type == "text" and block.text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 5 and 0 < message.usage.output_tokens <= 16


def test_stream_matches_create(client):
    kwargs = dict(model="smol", max_tokens=24, messages=QUESTION, system="Answer briefly.", extra_body=GREEDY)
    whole = client.messages.create(**kwargs)
    with client.messages.stream(**kwargs) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text == final.content[0].text
    assert final.stop_reason == whole.stop_reason
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        whole.usage.input_tokens,
        whole.usage.output_tokens,
    )


def test_count_tokens_matches_the_prompt_create_sends(client):
    counted = client.messages.count_tokens(model="smol", messages=QUESTION, tools=[WEATHER])
    message = client.messages.create(model="smol", max_tokens=1, messages=QUESTION, tools=[WEATHER])
    assert counted.input_tokens == message.usage.input_tokens > 50  # the tools are described in the prompt


def test_forced_tool_call(client):
    message = client.messages.create(
        model="smol",
        max_tokens=64,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        extra_body=GREEDY,
    )
    uses = [b for b in message.content if b.type == "tool_use"]
    assert uses and uses[0].name == "get_weather" and isinstance(uses[0].input, dict)
    assert uses[0].id.startswith("toolu_")
    assert message.stop_reason == "tool_use"
    # The result goes back as a tool_result, and the model answers from it.
    follow_up = client.messages.create(
        model="smol",
        max_tokens=16,
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": [u.model_dump() for u in uses]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "18C"}],
            },
        ],
        tools=[WEATHER],
    )
    assert follow_up.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_unknown_model_and_bad_input_raise_the_sdk_errors(client):
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="claude-opus-4", max_tokens=4, messages=QUESTION)
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model="smol", max_tokens=4, messages=QUESTION, extra_body={"temperature": 1.5})
    assert err.value.body["error"]["type"] == "invalid_request_error"


def test_the_sdk_key_goes_in_x_api_key(locked_server):  # noqa: F811
    client = anthropic.Anthropic(base_url=locked_server.url, api_key="key-one", max_retries=0, timeout=120)
    assert client.messages.count_tokens(model="x", messages=QUESTION).input_tokens > 5
    message = client.messages.create(model="x", max_tokens=2, messages=QUESTION)
    assert message.content
    wrong = anthropic.Anthropic(base_url=locked_server.url, api_key="nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as err:
        wrong.messages.create(model="x", max_tokens=2, messages=QUESTION)
    assert err.value.body["type"] == "error"
