"""`llmhost serve --engine transformers` on the embedded GGUF, through the official openai SDK."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")

from ..conftest import TEST_MAX_MODEL_LEN, start_server, stop_server  # noqa: E402

pytestmark = pytest.mark.e2e

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def hf_server(tmp_path_factory):
    srv = start_server(
        tmp_path_factory.mktemp("transformers"),
        "--engine",
        "transformers",
        "--gpu",
        "none",
        "--dtype",
        "float32",
        "--max-model-len",
        str(TEST_MAX_MODEL_LEN),
        "--max-num-seqs",
        "4",
        "--served-model-name",
        "smol",
        timeout_s=600,  # dequantising the GGUF takes ~20 s alone, minutes on a busy 2-core box
    )
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def client(hf_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{hf_server.url}/v1", api_key="unused", max_retries=0, timeout=300)


def test_health_and_model_info_name_the_engine(hf_server):
    health = httpx.get(f"{hf_server.url}/health").json()
    assert health["engine"] == "transformers" and health["device"] == "cpu"
    info = httpx.get(f"{hf_server.url}/api/v1/model/info").json()
    assert info["engine"] == "transformers" and info["max_model_len"] == TEST_MAX_MODEL_LEN


def test_chat_stream_equals_non_stream(client):
    kwargs = dict(model="smol", messages=QUESTION, max_tokens=24, temperature=0)
    full = client.chat.completions.create(**kwargs)
    assert "Paris" in full.choices[0].message.content
    assert full.usage.completion_tokens <= 24 and full.choices[0].finish_reason in ("stop", "length")
    chunks = list(
        client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_completions_with_stop_and_logprobs(client):
    r = client.completions.create(
        model="smol", prompt="1, 2, 3, 4, 5,", max_tokens=20, temperature=0, stop=[" 8"], logprobs=2
    )
    choice = r.choices[0]
    assert choice.finish_reason == "stop" and " 8" not in choice.text and choice.text.startswith(" 6")
    assert len(choice.logprobs.tokens) == r.usage.completion_tokens
    assert all(len(top) == 2 for top in choice.logprobs.top_logprobs)


def test_concurrent_requests_are_batched_and_all_answered(hf_server):
    async def main() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=f"{hf_server.url}/v1", api_key="unused", timeout=300)
        prompts = ["The capital of France is", "def add(a, b):", "Once upon a time", "Red, green,"] * 2
        create = aclient.completions.create
        rs = await asyncio.gather(
            *(create(model="smol", prompt=p, max_tokens=12, temperature=0) for p in prompts)
        )
        return [r.choices[0].text for r in rs]

    texts = asyncio.run(main())
    assert len(texts) == 8 and all(texts)
    assert texts[:4] == texts[4:]  # greedy: the same prompt gives the same text in any batch


def test_context_overflow_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="smol", prompt="hello " * 2000, max_tokens=10)
    assert err.value.body["code"] == "context_length_exceeded"


def test_structured_outputs_are_refused_not_ignored(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="smol",
            messages=[{"role": "user", "content": "Reply in JSON."}],
            max_tokens=10,
            response_format={"type": "json_object"},
        )
    assert err.value.body["param"] == "response_format"


def test_prompt_scoring_is_refused_with_a_400_not_ignored(hf_server, client):
    """The transformers engine computes no prompt log-probabilities: asking for them is a 400 naming the
    field; an echo of the prompt without logprobs still works (it needs no scores)."""
    for fields in ({"prompt_logprobs": 1}, {"echo": True, "logprobs": 1, "max_tokens": 0}):
        r = httpx.post(f"{hf_server.url}/v1/completions", json={"prompt": "Hi", **fields}, timeout=60)
        assert r.status_code == 400, r.text
        assert (
            r.json()["error"]["param"] == "prompt_logprobs" and "transformers" in r.json()["error"]["message"]
        )
    echoed = client.completions.create(model="smol", prompt="Hi there", max_tokens=0, echo=True)
    assert echoed.choices[0].text == "Hi there" and echoed.usage.completion_tokens == 0
