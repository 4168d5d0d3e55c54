"""End-to-end through the official `openai` SDK against a real llmhost server subprocess."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import openai
import pytest

pytestmark = pytest.mark.e2e

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def aclient(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_lists_the_served_name(client):
    models = client.models.list()
    assert [m.id for m in models.data][0] == "smol"
    assert models.data[0].model_extra["max_model_len"] == 1024


def test_chat_non_stream(client):
    r = client.chat.completions.create(model="smol", messages=QUESTION, max_tokens=16, temperature=0)
    choice = r.choices[0]
    assert r.object == "chat.completion" and r.model == "smol" and r.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 5 and 0 < r.usage.completion_tokens <= 16
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_alias_is_accepted_and_unknown_model_is_404(client):
    r = client.chat.completions.create(model="smol-alias", messages=QUESTION, max_tokens=2)
    assert r.model == "smol"
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4", messages=QUESTION, max_tokens=2)
    assert err.value.body["code"] == "model_not_found"


def test_chat_stream_matches_non_stream_and_reports_usage(client):
    kwargs = dict(model="smol", messages=QUESTION, max_tokens=24, temperature=0)
    full = client.chat.completions.create(**kwargs)
    chunks = list(
        client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [full.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens


def _prefix_cache_counters(server) -> tuple[float, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    found = dict(
        re.findall(r'^(vllm:prefix_cache_(?:queries|hits)_total)\{model_name="smol"\} (\S+)$', text, re.M)
    )
    return float(found["vllm:prefix_cache_queries_total"]), float(found["vllm:prefix_cache_hits_total"])


def test_a_repeated_prompt_reports_its_cached_tokens_stream_and_not(cached_server):
    server = cached_server
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
    messages = [
        {"role": "system", "content": "Ocelot desk. You answer in one short sentence, politely and exactly."},
        {"role": "user", "content": "Which ocean is the largest?"},
    ]
    kwargs = dict(model="smol", messages=messages, max_tokens=4, temperature=0)
    first = client.chat.completions.create(**kwargs)
    num_prompt = first.usage.prompt_tokens
    assert first.usage.prompt_tokens_details.cached_tokens < num_prompt - 1
    queries, hits = _prefix_cache_counters(server)
    second = client.chat.completions.create(**kwargs)
    assert second.usage.prompt_tokens_details.cached_tokens == num_prompt - 1
    assert _prefix_cache_counters(server) == (queries + num_prompt, hits + num_prompt - 1)
    chunks = list(
        client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == num_prompt - 1
    # n=3 choices of one prompt: computed once, the other two choices copy it (completions count prompt
    # tokens per choice, so cached tokens are summed over the choices).
    prompt = "Ocelot desk inventory: pencils, erasers, rulers, staplers, paper clips, folders, and"
    queries, hits = _prefix_cache_counters(server)
    completion = client.completions.create(model="smol", prompt=prompt, max_tokens=2, n=3, temperature=1)
    num = completion.usage.prompt_tokens // 3
    assert completion.usage.prompt_tokens_details.cached_tokens == 2 * (num - 1)
    assert _prefix_cache_counters(server) == (queries + 3 * num, hits + 2 * (num - 1))


def test_n_choices(client):
    r = client.chat.completions.create(
        model="smol", messages=QUESTION, max_tokens=12, n=2, temperature=1.0, seed=7
    )
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.message.content for c in r.choices)
    assert 2 <= r.usage.completion_tokens <= 24  # both choices counted


def test_n_choices_stream_each_gets_its_finish(client):
    chunks = list(
        client.chat.completions.create(
            model="smol", messages=QUESTION, max_tokens=8, n=3, stream=True, temperature=1.0
        )
    )
    finished = {c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason}
    assert finished == {0, 1, 2}


def test_stop_string(client):
    prompt = "1, 2, 3, 4, 5,"
    free = client.completions.create(model="smol", prompt=prompt, max_tokens=20, temperature=0)
    assert " 8" in free.choices[0].text
    stopped = client.completions.create(
        model="smol", prompt=prompt, max_tokens=20, temperature=0, stop=[" 8"]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].text == free.choices[0].text.split(" 8")[0]
    chat = client.chat.completions.create(
        model="smol", messages=QUESTION, max_tokens=30, temperature=0, stop="Paris"
    )
    assert "Paris" not in chat.choices[0].message.content


def test_max_tokens_gives_length_with_exact_usage(client):
    for field in ("max_tokens", "max_completion_tokens"):
        r = client.chat.completions.create(
            model="smol",
            messages=[{"role": "user", "content": "Tell a story."}],
            temperature=0,
            extra_body={"ignore_eos": True},
            **{field: 9},
        )
        assert r.choices[0].finish_reason == "length"
        assert r.usage.completion_tokens == 9


def test_same_seed_same_text(client):
    kwargs = dict(
        model="smol",
        messages=[{"role": "user", "content": "Write a poem about the sea."}],
        max_tokens=40,
        temperature=0.8,
        seed=4242,
    )
    first = client.chat.completions.create(**kwargs).choices[0].message.content
    second = client.chat.completions.create(**kwargs).choices[0].message.content
    assert first == second
    others = {
        client.chat.completions.create(**{**kwargs, "seed": s}).choices[0].message.content for s in (1, 2)
    }
    assert others != {first}


def test_context_overflow_is_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="smol", messages=[{"role": "user", "content": "word " * 3000}], max_tokens=10
        )
    assert err.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="smol", messages=QUESTION, max_tokens=5000)
    assert err.value.body["code"] == "context_length_exceeded"
    assert client.chat.completions.create(model="smol", messages=QUESTION, max_tokens=2).choices


def test_logprobs_chat_and_completions(client):
    r = client.chat.completions.create(
        model="smol", messages=QUESTION, max_tokens=4, temperature=0, logprobs=True, top_logprobs=3
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in content)
    c = client.completions.create(
        model="smol", prompt="The capital of France is", max_tokens=3, temperature=0, logprobs=2
    )
    assert len(c.choices[0].logprobs.tokens) == 3
    assert all(len(t) == 2 for t in c.choices[0].logprobs.top_logprobs)


def test_completions_batch_of_prompts_and_echo(client):
    r = client.completions.create(
        model="smol", prompt=["Hello", "The sky is"], max_tokens=3, n=2, temperature=0, echo=True
    )
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.choices[0].text.startswith("Hello") and r.choices[2].text.startswith("The sky is")


async def test_eight_concurrent_streams_each_answer_their_own_prompt(aclient):
    """Crosstalk check over HTTP: 8 streams sharing batches must each produce exactly the greedy text of
    their own prompt when run alone (each prompt's solo answer is distinct)."""
    prompts = [
        f"Write the number {n} in words, then count to ten:"
        for n in ("seven", "twelve", "forty", "ninety", "three", "sixty", "eleven", "a hundred")
    ]

    async def stream(prompt: str) -> str:
        out = []
        s = await aclient.completions.create(
            model="smol",
            prompt=prompt,
            max_tokens=24,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        async for chunk in s:
            out.append(chunk.choices[0].text if chunk.choices else "")
        return "".join(out)

    solo = [await stream(p) for p in prompts]
    assert len(set(solo)) == len(prompts)
    together = await asyncio.gather(*(stream(p) for p in prompts))
    assert together == solo


async def test_disconnect_mid_stream_frees_the_sequence(server):
    """A client that goes away must free its slot: the next decode step runs one sequence fewer."""
    body = {
        "model": "smol",
        "prompt": "Once upon a time",
        "max_tokens": 900,
        "temperature": 0,
        "stream": True,
        "ignore_eos": True,
    }

    def metric(text: str, name: str) -> float:
        return float(re.search(rf"^{re.escape(name)}\{{[^}}]*\}} (\S+)$", text, re.M).group(1))

    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:

        async def keep_reading() -> int:
            n = 0
            async with http.stream("POST", "/v1/completions", json=body) as r:
                async for line in r.aiter_lines():
                    n += line.startswith("data:")
            return n

        keeper = asyncio.create_task(keep_reading())
        async with http.stream("POST", "/v1/completions", json=body) as r:
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    break
            text = (await http.get("/metrics")).text
            assert metric(text, "vllm:num_requests_running") == 2
        # The stream is closed: its sequence must be gone while the other keeps decoding.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = (await http.get("/metrics")).text
            if (
                metric(text, "vllm:num_requests_running") == 1
                and metric(text, "llmhost:last_step_num_seqs") == 1
            ):
                break
            await asyncio.sleep(0.05)
        assert metric(text, "vllm:num_requests_running") == 1
        assert metric(text, "llmhost:last_step_num_seqs") == 1
        assert not keeper.done()
        keeper.cancel()
