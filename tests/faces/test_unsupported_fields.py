"""A field that would change the answer and that llmhost does not implement is a 400 naming it, never
silently ignored; metadata fields and harmless default values still pass."""

from __future__ import annotations

import pytest

from tests.scripted_engine import ScriptedEngine, scripted_client

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
COMPLETION = {"prompt": "hi", "max_tokens": 2}


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/v1/chat/completions", {**CHAT, "logit_bias": {"42": -100}}, "logit_bias"),
        ("/v1/chat/completions", {**CHAT, "min_tokens": 5}, "min_tokens"),
        ("/v1/chat/completions", {**CHAT, "guided_json": {"type": "object"}}, "guided_json"),
        ("/v1/chat/completions", {**CHAT, "return_token_ids": True, "stream": True}, "return_token_ids"),
        ("/v1/chat/completions", {**CHAT, "echo": True}, "echo"),
        ("/v1/completions", {**COMPLETION, "prompt_logprobs": 1}, "prompt_logprobs"),
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
        ("/v1/chat/completions", {**CHAT, "logit_bias": None, "return_token_ids": False}),
        ("/v1/completions", {**COMPLETION, "best_of": 1, "echo": True}),
    ],
)
async def test_metadata_and_default_values_still_pass(path, body):
    async with scripted_client(ScriptedEngine()) as client:
        r = await client.post(path, json=body)
    assert r.status_code == 200, r.text
