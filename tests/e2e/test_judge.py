"""Seed 000's judge client against real servers: its request shape, and the model-name rule.

The original judge server ignored the `model` field, so its client sends a fixed name. llmhost accepts
any name when it serves one default name, and keeps answering 404 for unknown names when the operator
named the model explicitly with --served-model-name (the shared `server` fixture does).
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import TEST_MAX_MODEL_LEN, start_server, stop_server

pytestmark = pytest.mark.e2e

# What consistency_reward_local.py sends (system prompt, judge prompt, temperature 0.1, max_tokens 10).
JUDGE_SYSTEM = "You are a professional question-answering assistant."
JUDGE_PROMPT = (
    "Based on the thinking process below, which option does it lead to? Reply with only one letter (A-H).\n"
    "Question: Which planet is known as the Red Planet? A. Venus B. Mars C. Jupiter D. Saturn\n"
    "Thinking process: The Red Planet is Mars because of iron oxide on its surface, so the answer is B."
)


def judge_request(model: str) -> dict:
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": JUDGE_PROMPT},
        ],
        "temperature": 0.1,
        "max_tokens": 10,
    }


@pytest.fixture(scope="module")
def default_name_server(tmp_path_factory):
    """Started without --served-model-name: one default name, derived from the model file."""
    srv = start_server(tmp_path_factory.mktemp("judge"), "--max-model-len", str(TEST_MAX_MODEL_LEN))
    yield srv
    stop_server(srv)


def test_health_is_the_judge_shape(default_name_server):
    r = httpx.get(f"{default_name_server.url}/health", timeout=5)
    assert r.status_code == 200
    assert r.json()["status"] == "healthy" and r.json()["model_loaded"] is True


def test_seed_000_request_any_model_name_is_accepted(default_name_server):
    served = httpx.get(f"{default_name_server.url}/v1/models", timeout=5).json()["data"][0]["id"]
    for name in ("qwen2.5-vl-3b-instruct", "whatever", served):
        r = httpx.post(f"{default_name_server.url}/v1/chat/completions", json=judge_request(name), timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        content = body["choices"][0]["message"]["content"].strip()  # what the client reads
        assert isinstance(content, str) and content
        assert body["model"] == served  # the answer names the model that actually answered
        assert body["usage"]["completion_tokens"] <= 10


def test_explicit_names_still_404_for_unknown_names(server):
    r = httpx.post(f"{server.url}/v1/chat/completions", json=judge_request("whatever"), timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(f"{server.url}/v1/chat/completions", json=judge_request("smol-alias"), timeout=30)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].strip()
