"""vLLM's tokenizer routes against the real embedded model (in-process app): tokens match what the
generation routes compute, and they decode back to the text."""

from __future__ import annotations

import httpx
import pytest

from llmhost.app import create_app
from llmhost.config import Settings
from llmhost.conversation.template import ChatTemplate


@pytest.fixture
async def client(engine):
    app = create_app(Settings(), engine, served_names=["smol"])
    await app.state.llmhost.load_model()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c


async def test_text_tokens_are_the_completion_routes_tokens_and_decode_back(client, engine):
    text = "The quick brown fox jumps over the lazy dog."
    r = await client.post("/tokenize", json={"prompt": text, "return_token_strs": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tokens"] == engine.tokenize(text, add_special=True) and body["count"] == len(body["tokens"])
    assert body["max_model_len"] == engine.info().max_model_len
    assert "".join(body["token_strs"]) == engine.detokenize(body["tokens"])
    r = await client.post("/detokenize", json={"tokens": body["tokens"]})
    assert r.status_code == 200 and r.json() == {"prompt": engine.detokenize(body["tokens"])}
    assert text in r.json()["prompt"]
    completion = await client.post("/v1/completions", json={"prompt": text, "max_tokens": 1})
    assert completion.json()["usage"]["prompt_tokens"] == body["count"]


async def test_messages_are_rendered_as_the_chat_route_renders_them(client, engine):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    r = await client.post("/tokenize", json={"messages": messages})
    assert r.status_code == 200, r.text
    info = engine.info()
    template = ChatTemplate.for_engine(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token)
    assert r.json()["tokens"] == engine.tokenize(template.render(messages, add_generation_prompt=True))
    chat = await client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 1})
    assert chat.json()["usage"]["prompt_tokens"] == r.json()["count"]


async def test_tokenizer_info_says_what_a_client_needs_to_build_prompts(client, engine):
    r = await client.get("/tokenizer_info")
    assert r.status_code == 200
    info = engine.info()
    body = r.json()
    assert body["eos_token"] == info.eos_token and body["chat_template"] == info.chat_template
    assert body["model_max_length"] == info.max_model_len and body["vocab_size"] == info.vocab_size


@pytest.mark.parametrize(
    "path, payload, param",
    [
        ("/tokenize", {}, None),
        ("/tokenize", {"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, None),
        ("/tokenize", {"prompt": 5}, "prompt"),
        ("/detokenize", {"tokens": [1, 10**9]}, "tokens"),
        ("/detokenize", {"tokens": "abc"}, "tokens"),
    ],
)
async def test_bad_input_is_an_openai_shaped_400(client, path, payload, param):
    r = await client.post(path, json=payload)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    if param is not None:
        assert r.json()["error"]["param"] == param


async def test_return_token_ids_gives_the_exact_tokens_that_decode_to_the_answer(client, engine):
    """vLLM's `return_token_ids`: an RL trainer keeps the sampled ids instead of re-tokenizing the text."""
    messages = [{"role": "user", "content": "Name a colour."}]
    r = await client.post(
        "/v1/chat/completions",
        json={"messages": messages, "max_tokens": 8, "temperature": 0, "return_token_ids": True},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    tokenized = await client.post("/tokenize", json={"messages": messages})
    assert body["prompt_token_ids"] == tokenized.json()["tokens"]
    [choice] = body["choices"]
    assert len(choice["token_ids"]) == body["usage"]["completion_tokens"]
    assert engine.detokenize(choice["token_ids"]).startswith(choice["message"]["content"])
    r = await client.post(
        "/v1/completions", json={"prompt": "One, two,", "max_tokens": 4, "n": 2, "return_token_ids": True}
    )
    assert r.status_code == 200, r.text
    for choice in r.json()["choices"]:
        assert choice["prompt_token_ids"] == engine.tokenize("One, two,", add_special=True)
        assert engine.detokenize(choice["token_ids"]).startswith(choice["text"])
    plain = await client.post("/v1/completions", json={"prompt": "One, two,", "max_tokens": 2})
    assert "token_ids" not in plain.json()["choices"][0]  # nothing changes for a client that did not ask
