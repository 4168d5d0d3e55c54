"""End-to-end through the official `openai` SDK's `client.responses` against a real llmhost server on the
embedded model (the bit-reproducible `server` fixture: answers are compared across requests)."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import openai
import pydantic
import pytest

pytestmark = pytest.mark.e2e

QUESTION = "What is the capital of France?"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_create_answers_with_a_message(client):
    response = client.responses.create(model="smol", input=QUESTION, max_output_tokens=16, temperature=0)
    assert response.id.startswith("resp_") and response.object == "response" and response.model == "smol"
    [message] = response.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert response.output_text and response.status in ("completed", "incomplete")
    usage = response.usage
    assert usage.input_tokens > 5 and 0 < usage.output_tokens <= 16
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.output_tokens_details.reasoning_tokens == 0


def test_greedy_answer_equals_the_chat_routes(client):
    system, user = "You are a geography teacher.", QUESTION
    response = client.responses.create(
        model="smol", instructions=system, input=user, max_output_tokens=24, temperature=0
    )
    chat = client.chat.completions.create(
        model="smol",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
        max_tokens=24,
        temperature=0,
    )
    assert response.output_text == chat.choices[0].message.content
    assert response.usage.input_tokens == chat.usage.prompt_tokens
    assert response.usage.output_tokens == chat.usage.completion_tokens


def test_instructions_are_the_system_message(client):
    kwargs = dict(model="smol", input="Hello!", max_output_tokens=1, temperature=0)
    plain = client.responses.create(**kwargs)
    instructed = client.responses.create(**kwargs, instructions="Always answer in French.")
    chat = client.chat.completions.create(
        model="smol",
        messages=[
            {"role": "system", "content": "Always answer in French."},
            {"role": "user", "content": "Hello!"},
        ],
        max_tokens=1,
    )
    assert instructed.instructions == "Always answer in French." and plain.instructions is None
    # SmolLM2's template writes a default system prompt when there is none: the instructions replace it.
    assert instructed.usage.input_tokens == chat.usage.prompt_tokens != plain.usage.input_tokens


def test_stream_events_come_in_order_and_add_up_to_the_final_response(client):
    kwargs = dict(model="smol", input=QUESTION, max_output_tokens=24, temperature=0)
    whole = client.responses.create(**kwargs)
    with client.responses.stream(**kwargs) as stream:
        events = list(stream)
        # As with OpenAI, a cut answer ends with `response.incomplete`, which the SDK does not finalize.
        final = stream.get_final_response() if whole.status == "completed" else events[-1].response
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed" if whole.status == "completed" else "response.incomplete",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == final.output_text == whole.output_text
    assert final.usage.output_tokens == whole.usage.output_tokens
    # With `stream=True` the SDK hands out the raw events: the same sequence.
    raw = list(client.responses.create(**kwargs, stream=True))
    assert [e.type for e in raw] == kinds


def test_previous_response_id_continues_the_conversation(client):
    first = client.responses.create(
        model="smol", input="My name is Ada. Say hi.", max_output_tokens=8, temperature=0
    )
    second = client.responses.create(
        model="smol",
        input="What is my name?",
        previous_response_id=first.id,
        max_output_tokens=8,
        temperature=0,
    )
    alone = client.responses.create(
        model="smol", input="What is my name?", max_output_tokens=8, temperature=0
    )
    assert second.previous_response_id == first.id
    # The earlier turn is in the prompt: as many tokens more as it takes.
    assert second.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens
    assert client.responses.retrieve(second.id).output_text == second.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_unknown")
    with pytest.raises(openai.NotFoundError):
        client.responses.create(
            model="smol", input="x", previous_response_id="resp_unknown", max_output_tokens=2
        )
    unstored = client.responses.create(model="smol", input="x", store=False, max_output_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_forced_function_call_and_its_output(client):
    question = "What is the weather in Paris?"
    for choice in ("required", {"type": "function", "name": "get_weather"}):
        response = client.responses.create(
            model="smol",
            input=question,
            tools=[WEATHER],
            tool_choice=choice,
            max_output_tokens=48,
            temperature=0,
        )
        calls = [item for item in response.output if item.type == "function_call"]
        assert calls and calls[0].name == "get_weather", response.output
        assert isinstance(json.loads(calls[0].arguments), dict) and calls[0].call_id.startswith("call_")
    # The result goes back as a function_call_output, and the model answers from it.
    follow_up = client.responses.create(
        model="smol",
        input=[
            {"role": "user", "content": question},
            *[item.model_dump(exclude_none=True) for item in response.output],
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18C and sunny"},
        ],
        tools=[WEATHER],
        max_output_tokens=16,
        temperature=0,
    )
    assert follow_up.output_text
    assert follow_up.usage.input_tokens > response.usage.input_tokens


class Capital(pydantic.BaseModel):
    country: str
    capital: str


def test_text_format_json_schema_gives_schema_valid_json(client):
    response = client.responses.parse(
        model="smol", input=QUESTION, text_format=Capital, max_output_tokens=64, temperature=0
    )
    assert response.status == "completed", response.output_text
    assert isinstance(response.output_parsed, Capital)
    Capital.model_validate_json(response.output_text)  # the SDK parsed it; so does pydantic


def test_max_output_tokens_makes_the_response_incomplete(client):
    response = client.responses.create(model="smol", input="Tell me a long story.", max_output_tokens=3)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 3 and response.output[0].status == "incomplete"


def test_bad_requests_are_4xx_in_openai_shape_and_the_server_keeps_serving(client, server):
    bad = [
        ({"input": "x", "background": True}, "background"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0]",
        ),
        ({"input": "x", "max_output_tokens": "ten"}, "max_output_tokens"),
        ({"input": "x " * 3000}, "input"),  # over the 1024-token context
    ]
    for body, param in bad:
        r = httpx.post(f"{server.url}/v1/responses", json={"model": "smol", **body}, timeout=60)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["param"] == param
    r = httpx.post(f"{server.url}/v1/responses", content=b"{not json", timeout=60)
    assert r.status_code == 400 and "error" in r.json()
    assert client.responses.create(model="smol", input="Hi", max_output_tokens=2).output_text is not None


async def test_disconnect_mid_stream_frees_the_sequence(server):
    """A client that goes away must free its slot, as on the chat route."""
    body = {"model": "smol", "input": "Once upon a time", "max_output_tokens": 900, "stream": True}

    def running(text: str) -> float:
        return float(re.search(r"^vllm:num_requests_running\{[^}]*\} (\S+)$", text, re.M).group(1))

    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        async with http.stream("POST", "/v1/responses", json=body) as r:
            async for line in r.aiter_lines():
                if line.startswith("event: response.output_text.delta"):
                    break
            assert running((await http.get("/metrics")).text) == 1
        deadline = time.monotonic() + 10
        while running((await http.get("/metrics")).text) != 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert running((await http.get("/metrics")).text) == 0
