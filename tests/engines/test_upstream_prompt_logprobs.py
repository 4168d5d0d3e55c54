"""The upstream engine's side of prompt log-probabilities, without a model: what is sent (vLLM takes
`prompt_logprobs` only without `stream`, and `max_tokens` 0 only with `echo`) and how vLLM's answer is
read. A real vLLM answers them in tests/vllm; an attached server without them is a 400 in
tests/e2e/test_upstream_serve.py."""

from __future__ import annotations

import pytest

from llmhost.engines.upstream.wire import DIALECTS, completion_body, parse_prompt_logprobs, scoring_body
from llmhost.errors import InvalidRequest
from llmhost.types import SamplingParams


def test_scoring_body_is_not_streamed_and_asks_at_least_one_token():
    params = SamplingParams(max_tokens=0, prompt_logprobs=3, temperature=0)
    body = scoring_body(completion_body("m", [1, 2, 3], params, 0, DIALECTS["vllm"]), 3)
    assert body["stream"] is False and "stream_options" not in body
    assert body["prompt_logprobs"] == 3 and body["max_tokens"] == 1 and body["prompt"] == [1, 2, 3]
    assert body["return_token_ids"] is True  # the vLLM dialect's own extra stays
    assert scoring_body(completion_body("m", [1], params, 7), 0)["max_tokens"] == 7


def test_only_servers_that_may_have_prompt_logprobs_are_asked():
    assert DIALECTS["vllm"].has_prompt_logprobs and DIALECTS["generic"].has_prompt_logprobs
    assert not any(DIALECTS[d].has_prompt_logprobs for d in ("sglang", "lmdeploy", "llama.cpp"))


def test_vllm_prompt_logprobs_are_read_with_rank_and_rivals():
    raw = [
        None,
        {"7": {"logprob": -2.5, "rank": 3, "decoded_token": " b"}, "9": {"logprob": -0.1, "rank": 1}},
        {
            "8": {"logprob": -0.2, "rank": 1, "decoded_token": " c"},
            "4": {"logprob": -2.0, "rank": 2, "decoded_token": " d"},
        },
    ]
    scores = parse_prompt_logprobs(raw, [5, 7, 8], 2)
    assert scores[0] is None
    first, second = scores[1], scores[2]
    assert first is not None and second is not None
    assert (first.token_id, first.token_bytes, first.logprob, first.rank) == (7, b" b", -2.5, 3)
    assert [t.token_id for t in first.top] == [9, 7]  # by logprob; the token itself when it is among them
    assert (second.rank, [t.token_id for t in second.top]) == (1, [8, 4])
    assert [t.token_id for t in parse_prompt_logprobs(raw, [5, 7, 8], 1)[1].top] == [9]


@pytest.mark.parametrize(
    "raw",
    [
        None,  # a server that does not know the field
        [None],  # not one entry per prompt token
        [None, {"3": {"logprob": -1.0}}],  # the prompt's own token missing
    ],
)
def test_an_answer_without_usable_prompt_logprobs_is_a_400(raw):
    with pytest.raises(InvalidRequest) as err:
        parse_prompt_logprobs(raw, [5, 7], 1)
    assert err.value.param == "prompt_logprobs"
