"""Judging by probabilities (`scoring="probability"`): the judge's first answer token and its 20 most
likely rivals give each option letter's share, and the reward is the policy letter's share. Against a
real server on the embedded model (bit-reproducible, so both routes see the same numbers)."""

from __future__ import annotations

import math

import httpx
import pytest

from llmhost.rewards import ConsistencyJudge, JudgeConfig
from llmhost.rewards.letters import letter_probabilities
from llmhost.rewards.swift_plugin import config_from_env

QUESTION = "Which planet is known as the Red Planet? A. Venus B. Mars C. Jupiter D. Saturn"
JUDGED = "<think>Iron oxide makes Mars look red, so the answer is B.</think><answer>B</answer>"
UNJUDGED = "<answer>B</answer>"  # no thinking: 0 without asking the judge


def test_letter_probabilities_share_the_letters_mass():
    probs = letter_probabilities(
        [("B", -0.5), ("B", -0.5), (" B", -1.0), ("C", -2.0), ("The", -0.1), ("a", -1.0), ("AB", -1.0)]
    )
    assert probs is not None and set(probs) == {"B", "C"}  # lower case and longer tokens are no options
    mass_b, mass_c = math.exp(-0.5) + math.exp(-1.0), math.exp(-2.0)  # the repeated "B" counts once
    assert probs["B"] == pytest.approx(mass_b / (mass_b + mass_c))
    assert sum(probs.values()) == pytest.approx(1.0)
    assert letter_probabilities([("The", -0.1), ("I", -2.0)]) is None


def test_config_and_plugin_take_the_scoring_mode():
    with pytest.raises(ValueError, match="scoring"):
        JudgeConfig(scoring="logprob")  # type: ignore[arg-type]
    assert config_from_env({"LLMHOST_REWARD_SCORING": "probability"}).scoring == "probability"


def test_batch_route_gives_probabilities_over_the_letters(server):
    body = {
        "scoring": "probability",
        "items": [
            {"question": QUESTION, "completion": JUDGED, "solution": "B"},
            {"question": QUESTION, "completion": UNJUDGED, "solution": "B"},
        ],
    }
    answer = httpx.post(f"{server.url}/v1/rewards/consistency", json=body, timeout=120).json()
    probs, rewards = answer["letter_probs"], answer["rewards"]
    assert probs[1] is None and rewards[1] == 0.0 and answer["num_judged"] == 1
    assert set(probs[0]) <= set("ABCDEFGH") and sum(probs[0].values()) == pytest.approx(1.0)
    assert 0.0 <= rewards[0] <= 1.0 and rewards[0] == probs[0].get("B", 0.0)
    assert answer["judge_letters"][0] == max(probs[0], key=probs[0].get)
    assert answer["judge_replies"][0] in set("ABCDEFGH")  # the grammar held the one token to a letter
    letter_mode = httpx.post(
        f"{server.url}/v1/rewards/consistency", json={"items": body["items"]}, timeout=120
    )
    assert "letter_probs" not in letter_mode.json()


def test_chat_route_reads_the_same_probabilities_from_top_logprobs(server):
    """The library on the chat route (what works with any server) computes the shares from the chat
    answer's `top_logprobs`; the batch route computes them inside the server: the same numbers."""
    verdicts = {}
    for route in ("chat", "batch"):
        judge = ConsistencyJudge(JudgeConfig(url=server.url, scoring="probability", route=route))
        verdicts[route] = judge.score([JUDGED, UNJUDGED], ["B", "B"], [QUESTION] * 2)
    chat, batch = verdicts["chat"], verdicts["batch"]
    assert chat[1].reward == batch[1].reward == 0.0 and chat[1].letter_probs is None
    assert chat[0].letter_probs is not None and batch[0].letter_probs is not None
    assert chat[0].letter_probs == pytest.approx(batch[0].letter_probs, abs=1e-6)
    assert chat[0].reward == pytest.approx(batch[0].reward, abs=1e-6) and 0.0 <= chat[0].reward <= 1.0
    assert chat[0].judge_letter == batch[0].judge_letter
