"""`logit_bias` (OpenAI's) and `min_tokens` (vLLM's) through the official openai SDK against the real
server on the embedded model; the engines' side is in tests/engines/test_token_fields.py."""

from __future__ import annotations

import httpx
import openai
import pytest

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
DONE = [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello!"}]


@pytest.fixture(scope="module")
def sdk(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def token_id(url: str, text: str) -> int:
    r = httpx.post(f"{url}/tokenize", json={"prompt": text, "add_special_tokens": False}, timeout=30)
    return r.json()["tokens"][0]


def test_logit_bias_bans_and_forces_tokens(sdk, server):
    first = sdk.chat.completions.create(model="smol", messages=QUESTION, max_tokens=8, temperature=0)
    greedy = first.choices[0].message.content
    banned = token_id(server.url, greedy)  # the first token of the greedy answer
    r = sdk.chat.completions.create(
        model="smol", messages=QUESTION, max_tokens=8, temperature=0, logit_bias={str(banned): -100}
    )
    assert r.choices[0].message.content != greedy
    forced = token_id(server.url, " banana")
    r = sdk.completions.create(
        model="smol", prompt="The capital of France is", max_tokens=4, logit_bias={str(forced): 100}
    )
    assert r.choices[0].text == " banana" * 4


def test_min_tokens_holds_off_the_end_of_an_answer(sdk):
    # The conversation's last turn is a finished assistant answer: continued, the model ends at once.
    body = {"add_generation_prompt": False}
    r = sdk.chat.completions.create(
        model="smol", messages=DONE, max_tokens=32, temperature=0, extra_body=body
    )
    assert r.usage.completion_tokens <= 2 and r.choices[0].finish_reason == "stop"
    r = sdk.chat.completions.create(
        model="smol", messages=DONE, max_tokens=32, temperature=0, extra_body={**body, "min_tokens": 10}
    )
    assert r.usage.completion_tokens >= 10


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"logit_bias": {"10000000": 5}}, "logit_bias"),  # outside the vocabulary
        ({"logit_bias": {"12": 100.5}}, "logit_bias"),
        ({"logit_bias": {"twelve": 1}}, "logit_bias"),
        ({"min_tokens": 9}, "min_tokens"),  # more than max_tokens
        ({"min_tokens": -1}, "min_tokens"),
    ],
)
def test_bad_values_are_a_400_naming_the_field(sdk, fields, param):
    with pytest.raises(openai.BadRequestError) as err:
        sdk.chat.completions.create(model="smol", messages=QUESTION, max_tokens=8, extra_body=fields)
    assert err.value.body["param"] == param or param in err.value.body["message"]
