"""The code agent loop on the real embedded model, through the official openai SDK.

SmolLM2-135M answers "write Python" with a fenced ```python block and then stops on its own, so
`min_turns=1` is what makes the loop run its code: the transcript must then hold a fenced `output`
observation with what the program printed. The loop is switched on per request (`extra_body`) on the
server with default settings (prefix caching on, so each turn continues the last one's KV), which also
shows the per-request override end to end."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.tools.test_sandbox import BWRAP_WORKS

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not BWRAP_WORKS, reason="the shared server's --sandbox auto needs bubblewrap"),
]

MESSAGES = [
    {"role": "system", "content": "You solve problems by writing Python code inside <python></python> tags."},
    {"role": "user", "content": "Print hello world using Python."},
]
LOOP = {"code_tools": True, "min_turns": 1, "max_turns": 1}


def test_min_turns_runs_the_models_code_and_feeds_the_output_back(cached_server):
    server = cached_server
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=600)
    r = client.chat.completions.create(
        model="smol", messages=MESSAGES, temperature=0, max_tokens=100, extra_body=LOOP
    )
    content = r.choices[0].message.content or ""
    assert "```python" in content
    assert "\n```output\n" in content, content  # the observation, inline in the transcript
    extra = r.model_extra or {}
    choice_extra = r.choices[0].model_extra or {}
    assert choice_extra["num_turns"] == 1
    [result] = choice_extra["tool_results"]
    assert result["exit_code"] == 0 and result["mode"] == "bwrap"
    assert result["stdout"] in content  # what the program printed is what the model was shown
    usage = r.usage.model_extra or {}
    assert usage["tool_tokens"] > 0 and usage["num_turns"] == 1
    assert 0 < r.usage.completion_tokens <= 100  # max_tokens bounds the model's tokens over all turns
    # The second turn continues the first one's KV: it computes the observation (and at most the
    # token the first turn stopped on), not the transcript again.
    assert usage["prefilled_tokens"] <= r.usage.prompt_tokens + usage["tool_tokens"] + 1
    assert not extra.get("error")
    metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
    assert 'llmhost:sandbox_executions_total{outcome="ok"}' in metrics


def test_stream_sends_model_text_then_the_observation_as_its_own_delta(cached_server):
    server = cached_server
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=600)
    stream = client.chat.completions.create(
        model="smol",
        messages=MESSAGES,
        temperature=0,
        max_tokens=100,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=LOOP,
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    [obs_index] = [i for i, p in enumerate(pieces) if p.startswith("\n```output\n")]
    assert pieces[obs_index].endswith("```\n")  # the whole observation in one delta
    assert "```python" in "".join(pieces[:obs_index])  # after the model's code, as it happened
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    usage = chunks[-1].usage
    assert usage is not None and (usage.model_extra or {})["tool_tokens"] > 0
