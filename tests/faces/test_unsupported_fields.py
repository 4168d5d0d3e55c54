"""A field that would change the answer and that llmhost does not implement is a 400 naming it, never
silently ignored; metadata fields and harmless default values still pass. `logit_bias` and
`min_tokens`, once on that list, reach the engine, and their bad values are 400s naming them."""

from __future__ import annotations

import pytest

from tests.scripted_engine import ScriptedEngine, scripted_client

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
COMPLETION = {"prompt": "hi", "max_tokens": 2}


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/v1/chat/completions", {**CHAT, "allowed_token_ids": [1, 2]}, "allowed_token_ids"),
        ("/v1/chat/completions", {**CHAT, "bad_words": ["no"]}, "bad_words"),
        ("/v1/chat/completions", {**CHAT, "guided_json": {"type": "object"}}, "guided_json"),
        ("/v1/chat/completions", {**CHAT, "echo": True}, "echo"),
        ("/v1/completions", {**COMPLETION, "prompt_logprobs": 1, "stream": True}, "prompt_logprobs"),
        ("/v1/completions", {**COMPLETION, "best_of": 3}, "best_of"),
        ("/v1/completions", {**COMPLETION, "skip_special_tokens": False}, "skip_special_tokens"),
    ],
)
async def test_an_output_changing_field_llmhost_lacks_is_a_400_naming_it(path, body, field):
    engine = ScriptedEngine()
    async with scripted_client(engine) as client:
        r = await client.post(path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field and field in r.json()["error"]["message"]
    assert not engine.calls


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/chat/completions", {**CHAT, "store": False, "metadata": {"a": "b"}, "service_tier": "auto"}),
        ("/v1/chat/completions", {**CHAT, "logit_bias": {}, "min_tokens": 0, "skip_special_tokens": True}),
        ("/v1/chat/completions", {**CHAT, "logit_bias": None, "min_tokens": None, "return_token_ids": False}),
        ("/v1/completions", {**COMPLETION, "best_of": 1, "echo": True}),
    ],
)
async def test_metadata_and_default_values_still_pass(path, body):
    async with scripted_client(ScriptedEngine()) as client:
        r = await client.post(path, json=body)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path, base", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
async def test_logit_bias_and_min_tokens_reach_the_engine(path, base):
    engine = ScriptedEngine()
    body = {**base, "logit_bias": {"42": -100, "7": 2.5}, "min_tokens": 2}
    async with scripted_client(engine) as client:
        r = await client.post(path, json=body)
    assert r.status_code == 200, r.text
    params = engine.calls[0].params
    assert params.logit_bias == ((42, -100.0), (7, 2.5)) and params.min_tokens == 2


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"logit_bias": {"42": "-100"}}, "logit_bias"),  # a value must be a number
        ({"logit_bias": {"42": -101}}, "logit_bias"),
        ({"logit_bias": {"-1": 5}}, "logit_bias"),
        ({"logit_bias": {"1e3": 5}}, "logit_bias"),
        ({"logit_bias": {"256": 5}}, "logit_bias"),  # the scripted engine's vocabulary is 256 bytes
        ({"logit_bias": [[42, -100]]}, "logit_bias"),  # llama-server's list form is not OpenAI's
        ({"min_tokens": 3}, "min_tokens"),  # more than max_tokens (2)
        ({"min_tokens": 1.5}, "min_tokens"),
    ],
)
async def test_bad_logit_bias_and_min_tokens_are_a_400_naming_them(fields, param):
    engine = ScriptedEngine()
    async with scripted_client(engine) as client:
        r = await client.post("/v1/chat/completions", json={**CHAT, **fields})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param or param in error["message"], error
    assert not engine.calls
