"""The Responses API face, in-process around a ScriptedEngine (fixed outputs, Qwen3's template): what the
input becomes in the prompt, what the output becomes in items and stream events, the stored responses and
the error shapes; partly through the official `openai` SDK (in-process too). The same SDK against a real
server on the embedded model is in tests/e2e/test_responses_sdk.py."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import openai
import pytest

from llmhost.errors import EngineError
from tests.faces.test_anthropic_messages import THINKING, qwen3_engine, sse_events
from tests.faces.test_qwen3_coder_tools import ARGS, PIECES, RUN, TEMPLATE_FILE
from tests.faces.test_tool_calling import CALL_PIECES
from tests.scripted_engine import ScriptedEngine, scripted_client, sdk_transport_client

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}
ASK_WEATHER = {"model": "scripted", "input": "Weather in Paris?", "tools": [WEATHER]}


@contextlib.asynccontextmanager
async def sdk_client(engine: ScriptedEngine, **settings: object) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official SDK on an in-process app."""
    async with scripted_client(engine, **settings) as client:
        http = sdk_transport_client(client)
        async with openai.AsyncOpenAI(
            base_url="http://scripted/v1", api_key="-", http_client=http, max_retries=0
        ) as sdk:
            yield sdk


# -- the input in the prompt ----------------------------------------------------------------------------
async def test_a_conversation_of_items_renders_as_the_chat_route_would():
    engine = qwen3_engine()
    items = [
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": "Look."}],
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}],
        },
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
    ]
    chat_messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "reasoning_content": "Look.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ]
    chat_tool = {
        "type": "function",
        "function": {k: v for k, v in WEATHER.items() if k not in ("type", "strict")},
    }
    async with scripted_client(engine) as client:
        r = await client.post(
            "/v1/responses", json={**ASK_WEATHER, "input": items, "instructions": "Be brief."}
        )
        chat = await client.post(
            "/v1/chat/completions", json={"messages": chat_messages, "tools": [chat_tool]}
        )
    assert r.status_code == 200 and chat.status_code == 200, r.text
    prompt = engine.calls[0].prompt_text
    assert prompt == engine.calls[1].prompt_text
    assert prompt.startswith("<|im_start|>system\nBe brief.")
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert "<tool_response>\n18C\n</tool_response>" in prompt


async def test_reasoning_effort_none_turns_thinking_off():
    engine = qwen3_engine()
    async with scripted_client(engine) as client:
        r = await client.post("/v1/responses", json={"input": "Hi", "reasoning": {"effort": "none"}})
    assert r.status_code == 200, r.text
    assert engine.calls[0].prompt_text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


# -- the output as items -------------------------------------------------------------------------------------
async def test_reasoning_becomes_a_reasoning_item_before_the_message():
    engine = qwen3_engine()
    engine.queue(THINKING)
    async with sdk_client(engine, reasoning_parser="qwen3") as sdk:
        response = await sdk.responses.create(model="scripted", input="Hi")
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.content[0].text == "The user says hi."
    assert reasoning.id.startswith("rs_") and reasoning.summary == []
    assert message.type == "message" and response.output_text == "Hello!"
    assert response.status == "completed" and response.id.startswith("resp_")
    assert response.usage.output_tokens == len(THINKING)
    assert 0 < response.usage.output_tokens_details.reasoning_tokens <= response.usage.output_tokens


async def test_streamed_reasoning_and_text_match_the_whole_answer():
    engine = qwen3_engine()
    engine.queue(THINKING, THINKING)
    async with sdk_client(engine, reasoning_parser="qwen3") as sdk:
        whole = await sdk.responses.create(model="scripted", input="Hi")
        async with sdk.responses.stream(model="scripted", input="Hi") as stream:
            events = [event async for event in stream]
            final = await stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.reasoning_text.delta"] * kinds.count("response.reasoning_text.delta"),
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * kinds.count("response.output_text.delta"),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    thinking = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert (thinking, text) == ("The user says hi.", "Hello!")
    assert final.output_text == whole.output_text == text
    assert final.output[0].content[0].text == whole.output[0].content[0].text == thinking
    assert final.usage.model_dump() == whole.usage.model_dump()


async def test_a_parsed_tool_call_is_a_function_call_item_whole_and_streamed():
    engine = qwen3_engine()
    engine.queue(CALL_PIECES, CALL_PIECES)
    async with sdk_client(engine) as sdk:
        whole = await sdk.responses.create(**ASK_WEATHER)
        async with sdk.responses.stream(**ASK_WEATHER) as stream:
            events = [event async for event in stream]
            final = await stream.get_final_response()
    for response in (whole, final):
        message, call = response.output
        assert message.content[0].text == "I will check."
        assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
        assert json.loads(call.arguments) == {"city": "Paris"} and call.call_id.startswith("call_")
    added = [e for e in events if e.type == "response.output_item.added" and e.item.type == "function_call"]
    assert added[0].item.arguments == "" and added[0].item.name == "get_weather"
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    [done] = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(pieces) > 1 and "".join(pieces) == done.arguments == final.output[1].arguments


async def test_qwen3_coder_xml_calls_are_read_in_this_face_too():
    """The server's tool-call format (here from a Qwen3-Coder template) reaches the Responses face
    through the shared plan: auto calls, whole and streamed, and a forced call's XML pre-fill."""
    engine = ScriptedEngine()
    engine.queue(PIECES, PIECES, ["<parameter=command>\nls\n</parameter>\n</function>"])
    tool = {"type": "function", **RUN["function"]}
    ask = {"model": "scripted", "input": "Count the lines of a.py", "tools": [tool]}
    async with sdk_client(engine, chat_template=str(TEMPLATE_FILE)) as sdk:
        whole = await sdk.responses.create(**ask)
        async with sdk.responses.stream(**ask) as stream:
            final = await stream.get_final_response()
        forced = await sdk.responses.create(**ask, tool_choice={"type": "function", "name": "run_command"})
    for response in (whole, final):
        message, call = response.output
        assert message.content[0].text == "I'll run it."
        assert (call.name, json.loads(call.arguments)) == ("run_command", ARGS)
    assert engine.calls[2].prompt_text.endswith("<tool_call>\n<function=run_command>\n")
    [call] = forced.output
    assert (call.name, json.loads(call.arguments)) == ("run_command", {"command": "ls"})


async def test_a_malformed_call_stays_text_in_the_whole_answer():
    engine = qwen3_engine()
    engine.queue(['<tool_call>\n{"name": "get_weather", "arguments": {"city": </tool_call>'])
    async with scripted_client(engine) as client:
        r = await client.post("/v1/responses", json=ASK_WEATHER)
    [message] = r.json()["output"]
    assert message["type"] == "message" and message["content"][0]["text"].startswith("<tool_call>")


async def test_max_output_tokens_makes_the_response_incomplete():
    engine = ScriptedEngine()
    engine.queue(["a", "b", "c"], ["a", "b", "c"])
    async with scripted_client(engine) as client:
        r = await client.post("/v1/responses", json={"input": "x", "max_output_tokens": 2})
        streamed = await client.post(
            "/v1/responses", json={"input": "x", "max_output_tokens": 2, "stream": True}
        )
    body = r.json()
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete" and body["output"][0]["content"][0]["text"] == "ab"
    assert body["completed_at"] is None and body["usage"]["output_tokens"] == 2
    name, last = sse_events(streamed.text)[-1]
    assert name == "response.incomplete" and last["response"]["status"] == "incomplete"
    assert last["response"]["output"][0]["status"] == "incomplete"


async def test_an_error_after_the_start_is_an_error_event_then_a_failed_response():
    engine = ScriptedEngine()
    engine.queue(["Hel", EngineError("the engine died")])
    async with scripted_client(engine) as client:
        r = await client.post("/v1/responses", json={"input": "x", "stream": True})
        after = await client.post("/v1/responses", json={"input": "x"})
    events = sse_events(r.text)
    (error_name, error), (failed_name, failed) = events[-2:]
    assert (error_name, failed_name) == ("error", "response.failed")
    assert error["message"] == "the engine died" and error["sequence_number"] + 1 == failed["sequence_number"]
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": "server_error", "message": "the engine died"}
    assert failed["response"]["output"][0]["content"][0]["text"] == "Hel"
    assert after.status_code == 200


async def test_text_format_json_schema_reaches_the_engine_as_a_grammar():
    engine = ScriptedEngine()
    engine.queue(['{"city": "Paris"}'])
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    fmt = {"type": "json_schema", "name": "place", "schema": schema, "strict": True}
    async with scripted_client(engine) as client:
        r = await client.post("/v1/responses", json={"input": "x", "text": {"format": fmt}})
    assert r.status_code == 200, r.text
    assert engine.calls[0].params.grammar is not None and "city" in engine.calls[0].params.grammar
    assert r.json()["text"] == {"format": fmt}


# -- stored responses ------------------------------------------------------------------------------------
async def test_previous_response_id_continues_the_conversation():
    engine = qwen3_engine()
    engine.queue(["Paris."], ["About 2 million."])
    async with sdk_client(engine) as sdk:
        first = await sdk.responses.create(
            model="scripted", input="Capital of France?", instructions="Be terse."
        )
        second = await sdk.responses.create(
            model="scripted", input="Its population?", previous_response_id=first.id
        )
        again = await sdk.responses.retrieve(second.id)
    prompt = engine.calls[1].prompt_text
    assert "Capital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>" in prompt
    assert "Its population?" in prompt and "Be terse." not in prompt  # instructions are not carried over
    assert again.output_text == "About 2 million." and again.previous_response_id == first.id


async def test_unknown_and_unstored_responses_are_404():
    engine = ScriptedEngine()
    async with sdk_client(engine) as sdk:
        unstored = await sdk.responses.create(model="scripted", input="x", store=False)
        with pytest.raises(openai.NotFoundError):
            await sdk.responses.retrieve(unstored.id)
        with pytest.raises(openai.NotFoundError) as err:
            await sdk.responses.create(model="scripted", input="x", previous_response_id="resp_nope")
        assert err.value.body["param"] == "previous_response_id"
        assert err.value.body["code"] == "previous_response_not_found"
        stored = await sdk.responses.create(model="scripted", input="x")
        await sdk.responses.delete(stored.id)
        with pytest.raises(openai.NotFoundError):
            await sdk.responses.retrieve(stored.id)
        with pytest.raises(openai.NotFoundError):
            await sdk.responses.delete(stored.id)


async def test_each_api_key_sees_only_its_own_responses():
    engine = ScriptedEngine()
    async with scripted_client(engine, api_key=["key-a", "key-b"]) as client:
        a = {"authorization": "Bearer key-a"}
        r = await client.post("/v1/responses", json={"input": "x"}, headers=a)
        response_id = r.json()["id"]
        mine = await client.get(f"/v1/responses/{response_id}", headers=a)
        theirs = await client.get(f"/v1/responses/{response_id}", headers={"x-api-key": "key-b"})
        chained = await client.post(
            "/v1/responses",
            json={"input": "y", "previous_response_id": response_id},
            headers={"x-api-key": "key-b"},
        )
    assert mine.status_code == 200 and mine.json() == r.json()
    assert theirs.status_code == 404 and chained.status_code == 404
    assert theirs.json()["error"]["type"] == "invalid_request_error"


async def test_the_store_can_be_turned_off():
    engine = ScriptedEngine()
    async with scripted_client(engine, responses_store_max_items=0) as client:
        r = await client.post("/v1/responses", json={"input": "x"})
        got = await client.get(f"/v1/responses/{r.json()['id']}")
    assert r.status_code == 200 and r.json()["store"] is False and got.status_code == 404


# -- refusals --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"background": True}, "background"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "other"}}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"include": ["message.output_text.logprobs"]}, "include[0]"),
        ({"truncation": "auto"}, "truncation"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        (  # the scripted model reads text only
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]}]},
            "input[0].content[0]",
        ),
        (
            {"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "data:,"}]}]},
            "input[0].content[0]",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0]",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0]",
        ),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format"),
        ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"not": {}}}}}, "text.format"),
        ({"temperature": "hot"}, "temperature"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"input": []}, "input"),
    ],
)
async def test_what_cannot_be_honoured_is_a_400_naming_the_field(extra, param):
    async with scripted_client(ScriptedEngine()) as client:
        r = await client.post("/v1/responses", json={"model": "scripted", "input": "x", **extra})
        ok = await client.post("/v1/responses", json={"input": "x"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
    assert set(r.json()) == {"error"} and set(error) == {"message", "type", "param", "code"}
    assert ok.status_code == 200


async def test_harmless_fields_codex_sends_are_accepted():
    async with scripted_client(ScriptedEngine()) as client:
        r = await client.post(
            "/v1/responses",
            json={
                "input": "x",
                "include": ["reasoning.encrypted_content"],
                "reasoning": {"effort": "medium", "summary": "auto"},
                "text": {"verbosity": "low"},
                "prompt_cache_key": "session-1",
                "store": False,
                "parallel_tool_calls": False,
                "stream_options": {"include_obfuscation": False},
            },
        )
    assert r.status_code == 200, r.text
    assert r.json()["reasoning"] == {"effort": "medium", "summary": "auto"}


async def test_the_routes_are_documented_with_their_models():
    async with scripted_client(ScriptedEngine()) as client:
        schema = (await client.get("/openapi.json")).json()
    create = schema["paths"]["/v1/responses"]["post"]["responses"]["200"]["content"]
    assert create["application/json"]["schema"] == {"$ref": "#/components/schemas/ResponseObject"}
    stream = json.dumps(create["text/event-stream"])
    assert "response.output_text.delta" in stream and "response.function_call_arguments.done" in stream
    assert {"get", "delete"} <= set(schema["paths"]["/v1/responses/{response_id}"])


def test_input_images_reach_the_template_and_the_pipeline_in_order():
    """An earlier turn's image (continued with previous_response_id) comes first, then this request's."""
    from llmhost.faces.responses_api.items import as_input_items, image_parts, template_messages

    def user(*parts):
        return {"role": "user", "content": list(parts)}

    earlier = as_input_items([user({"type": "input_image", "image_url": "data:image/png;base64,AA=="})])
    items = as_input_items(
        [
            user(
                {"type": "input_text", "text": "and"},
                {"type": "input_image", "image_url": "file:///pics/b.png", "detail": "low"},
                {"type": "input_text", "text": "?"},
            )
        ]
    )
    assert [(p.url, p.param) for p in image_parts(earlier, items)] == [
        ("data:image/png;base64,AA==", "previous_response_id"),
        ("file:///pics/b.png", "input[0].content[1]"),
    ]
    assert template_messages([*earlier, *items]) == [
        {"role": "user", "content": [{"type": "image"}]},
        {
            "role": "user",
            "content": [{"type": "text", "text": "and"}, {"type": "image"}, {"type": "text", "text": "?"}],
        },
    ]
