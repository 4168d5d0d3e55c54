"""Scoring through the OpenAI routes, as evaluation harnesses do it, with the official openai SDK against a
real server on the embedded model: `echo` + `logprobs` (lm-evaluation-harness's `local-completions`
loglikelihood request), vLLM's `prompt_logprobs`, and streamed `return_token_ids`.

The `server` fixture runs without prefix caching (bit-reproducible), so numbers from different requests
can be compared; `cached_server` checks that a cached prompt is still scored in full.
"""

from __future__ import annotations

import math

import httpx
import openai
import pytest

pytestmark = pytest.mark.e2e

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def sdk(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def tokenize(url: str, text: str) -> list[int]:
    r = httpx.post(f"{url}/tokenize", json={"prompt": text, "add_special_tokens": False}, timeout=30)
    return r.json()["tokens"]


def detokenize(url: str, ids: list[int]) -> str:
    return httpx.post(f"{url}/detokenize", json={"tokens": ids}, timeout=30).json()["prompt"]


def loglikelihood(
    sdk: openai.OpenAI, contexts: list[list[int]], continuations: list[list[int]]
) -> list[tuple]:
    """What lm-evaluation-harness's `local-completions` does for `loglikelihood`: one batched request of
    token-id prompts (context + continuation) with `echo`, `logprobs: 1`, `max_tokens: 1`, then the sum of
    `token_logprobs[ctxlen:-1]` (the last entry is the generated token) and whether each continuation
    token was the most likely."""
    r = sdk.completions.create(
        model="smol",
        prompt=[c + x for c, x in zip(contexts, continuations, strict=True)],
        temperature=0,
        max_tokens=1,
        logprobs=1,
        seed=1234,
        echo=True,
    )
    out = []
    for choice, context in zip(sorted(r.choices, key=lambda c: c.index), contexts, strict=True):
        values = choice.logprobs.token_logprobs[len(context) : -1]
        tops = choice.logprobs.top_logprobs[len(context) : -1]
        out.append((sum(values), all(v == max(t.values()) for v, t in zip(values, tops, strict=True))))
    return out


def test_echo_logprobs_is_what_lm_eval_harness_reads(sdk, server):
    context = tokenize(server.url, "The capital of France is")
    sensible, gibberish = tokenize(server.url, " Paris"), tokenize(server.url, " purple elephant spoon")
    r = sdk.completions.create(
        model="smol", prompt=[context + sensible], temperature=0, max_tokens=1, logprobs=1, echo=True
    )
    choice = r.choices[0]
    prompt_text = detokenize(server.url, context + sensible)
    assert choice.text.startswith(prompt_text) and len(choice.text) > len(prompt_text)
    lp = choice.logprobs
    num = len(context) + len(sensible) + 1  # the prompt's tokens, then the generated one
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == num
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v is not None and v <= 0 for v in lp.token_logprobs[1:])
    assert all(len(t) == 1 for t in lp.top_logprobs[1:])
    assert "".join(lp.tokens[:-1]) == prompt_text and lp.text_offset[0] == 0
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(num)]
    assert r.usage.completion_tokens == 1 and r.usage.prompt_tokens == num - 1

    (good, good_greedy), (bad, bad_greedy) = loglikelihood(sdk, [context, context], [sensible, gibberish])
    assert good > bad + 5 and good_greedy and not bad_greedy  # " Paris" is the model's greedy answer


def test_max_tokens_0_scores_the_prompt_only_for_text_and_token_prompts(sdk, server):
    texts = ["The capital of France is Paris.", "Two plus two is four."]
    r = sdk.completions.create(model="smol", prompt=texts, max_tokens=0, logprobs=3, echo=True)
    ids = [tokenize(server.url, t) for t in texts]
    assert [c.text for c in r.choices] == texts
    for choice, prompt in zip(r.choices, ids, strict=True):
        assert choice.finish_reason == "length"
        assert (
            len(choice.logprobs.token_logprobs) == len(prompt) and choice.logprobs.token_logprobs[0] is None
        )
        assert all(len(t) == 3 for t in choice.logprobs.top_logprobs[1:])
    assert r.usage.completion_tokens == 0 and r.usage.prompt_tokens == sum(map(len, ids))
    # The same prompts as token ids: the same numbers.
    again = sdk.completions.create(model="smol", prompt=ids, max_tokens=0, logprobs=3, echo=True)
    assert [c.text for c in again.choices] == texts
    assert [c.logprobs.token_logprobs for c in again.choices] == [
        c.logprobs.token_logprobs for c in r.choices
    ]


def test_echo_logprobs_equal_prompt_logprobs_and_the_generated_logprobs(sdk, server):
    """One prompt token's logprob three ways: echoed, in vLLM's `prompt_logprobs`, and reported when the
    same engine generated that token (the prompt is the earlier prompt extended by its greedy answer)."""
    base = "The capital of Germany is"
    generated = sdk.completions.create(model="smol", prompt=base, max_tokens=3, temperature=0, logprobs=2)
    greedy = generated.choices[0]
    extended = base + greedy.text
    ids = tokenize(server.url, extended)
    r = sdk.completions.create(
        model="smol", prompt=[ids], max_tokens=0, echo=True, logprobs=2, extra_body={"prompt_logprobs": 2}
    )
    choice = r.choices[0].model_dump()
    echoed, vllm_shape = choice["logprobs"]["token_logprobs"], choice["prompt_logprobs"]
    assert len(vllm_shape) == len(ids) and vllm_shape[0] is None
    for position, entry in enumerate(vllm_shape[1:], start=1):
        own = entry[str(ids[position])]
        assert own["logprob"] == echoed[position] and own["rank"] >= 1
        assert sorted(e["rank"] for e in entry.values())[:2] == [1, 2] and len(entry) in (2, 3)
    num_base = len(tokenize(server.url, base))
    for offset, value in enumerate(greedy.logprobs.token_logprobs):
        assert echoed[num_base + offset] == pytest.approx(value, abs=1e-3)


def test_prompt_logprobs_on_completions_and_chat_without_echo(sdk, server):
    r = sdk.completions.create(
        model="smol", prompt="Hello there", max_tokens=2, temperature=0, extra_body={"prompt_logprobs": 0}
    )
    choice = r.choices[0].model_dump()
    assert choice["logprobs"] is None and not choice["text"].startswith("Hello")
    ids = tokenize(server.url, "Hello there")
    assert [list(e) for e in choice["prompt_logprobs"][1:]] == [[str(t)] for t in ids[1:]]

    chat = sdk.chat.completions.create(
        model="smol", messages=QUESTION, max_tokens=2, temperature=0, n=2, extra_body={"prompt_logprobs": 1}
    ).model_dump()
    scores = chat["prompt_logprobs"]  # vLLM puts the chat's at the top: one prompt for every choice
    assert len(scores) == chat["usage"]["prompt_tokens"] and scores[0] is None
    assert all(1 <= len(entry) <= 2 for entry in scores[1:])
    assert all(math.isfinite(e["logprob"]) for entry in scores[1:] for e in entry.values())


def test_a_cached_prompt_is_still_scored_in_full(cached_server):
    sdk = openai.OpenAI(base_url=f"{cached_server.url}/v1", api_key="unused", max_retries=0, timeout=120)
    prompt = "A long shared rubric that a judge reads before every item. " * 4 + "Item:"
    for _ in range(2):  # the second time, the prefix comes from the cache
        warm = sdk.completions.create(model="smol", prompt=prompt, max_tokens=1, temperature=0)
    assert warm.usage.prompt_tokens_details.cached_tokens > 0
    r = sdk.completions.create(model="smol", prompt=prompt, max_tokens=0, echo=True, logprobs=1)
    lp = r.choices[0].logprobs
    assert len(lp.token_logprobs) == r.usage.prompt_tokens and lp.token_logprobs[0] is None
    assert all(v is not None for v in lp.token_logprobs[1:])
    assert r.usage.prompt_tokens_details.cached_tokens == 0


def test_streamed_return_token_ids_decode_to_the_streamed_text(sdk, server):
    stream = sdk.chat.completions.create(
        model="smol",
        messages=QUESTION,
        max_tokens=12,
        temperature=0,
        stream=True,
        extra_body={"return_token_ids": True},
    )
    text, ids, prompt_ids = "", [], None
    for chunk in stream:
        data = chunk.model_dump()
        prompt_ids = prompt_ids or data.get("prompt_token_ids")
        for choice in data["choices"]:
            text += choice["delta"].get("content") or ""
            ids += choice.get("token_ids") or []
    whole = sdk.chat.completions.create(
        model="smol", messages=QUESTION, max_tokens=12, temperature=0, extra_body={"return_token_ids": True}
    ).model_dump()
    assert text and ids == whole["choices"][0]["token_ids"] and prompt_ids == whole["prompt_token_ids"]
    assert detokenize(server.url, ids).startswith(text)  # the end-of-generation token adds nothing

    stream = sdk.completions.create(
        model="smol",
        prompt=["Once upon a time", "The sky is"],
        max_tokens=8,
        temperature=0,
        n=2,
        stream=True,
        extra_body={"return_token_ids": True},
    )
    texts, token_ids, prompts = [""] * 4, [[] for _ in range(4)], [None] * 4
    for chunk in stream:
        for choice in chunk.model_dump()["choices"]:
            i = choice["index"]
            texts[i] += choice["text"]
            token_ids[i] += choice["token_ids"]
            if choice.get("prompt_token_ids") is not None:
                assert prompts[i] is None  # once, in the choice's first chunk
                prompts[i] = choice["prompt_token_ids"]
    assert prompts[0] == prompts[1] == tokenize(server.url, "Once upon a time")
    assert prompts[2] == prompts[3] == tokenize(server.url, "The sky is")
    for text, ids in zip(texts, token_ids, strict=True):
        assert text and detokenize(server.url, ids).startswith(text)


@pytest.mark.parametrize(
    "route, fields, param",
    [
        ("/v1/completions", {"prompt_logprobs": -1}, "prompt_logprobs"),
        ("/v1/completions", {"prompt_logprobs": 21}, "prompt_logprobs"),
        ("/v1/completions", {"echo": True, "logprobs": 21, "max_tokens": 0}, "logprobs"),
        ("/v1/completions", {"max_tokens": 0}, "max_tokens"),  # as vLLM: 0 only to echo or score the prompt
        ("/v1/completions", {"max_tokens": -1, "echo": True}, "max_tokens"),
        ("/v1/completions", {"prompt_logprobs": 1, "stream": True}, "prompt_logprobs"),
        ("/v1/chat/completions", {"prompt_logprobs": 1, "stream": True}, "prompt_logprobs"),
        ("/v1/chat/completions", {"prompt_logprobs": "2"}, "prompt_logprobs"),
        ("/v1/chat/completions", {"max_tokens": 0, "prompt_logprobs": 1}, "max_tokens"),
        ("/v1/chat/completions", {"prompt_logprobs": 1, "code_tools": True}, "prompt_logprobs"),
        (
            "/v1/chat/completions",
            {"return_token_ids": True, "stream": True, "code_tools": True},
            "return_token_ids",
        ),
    ],
)
def test_bad_values_are_a_400_naming_the_field(server, route, fields, param):
    body = {
        "model": "smol",
        **({"prompt": "Hi"} if route == "/v1/completions" else {"messages": QUESTION}),
        **fields,
    }
    r = httpx.post(f"{server.url}{route}", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
