"""Reasoning split in the OpenAI chat face, in-process around a ScriptedEngine (fixed outputs).

The outputs are chosen to hit the parser's hard cases through the whole face: tags split across
deltas, a cut by max_tokens inside the thinking, a template that opens `<think>` itself, n=2.
"""

import json
from pathlib import Path

from llmhost.types import FinishReason
from tests.scripted_engine import Script, ScriptedEngine, scripted_client

QWEN3_TEMPLATE = (Path(__file__).parent.parent / "fixtures" / "qwen3_chat_template.jinja").read_text()
# Qwen3-Thinking-2507 style: the generation prompt ends inside an open think block.
OPENING_TEMPLATE = QWEN3_TEMPLATE.replace(
    "{{- '<|im_start|>assistant\\n' }}", "{{- '<|im_start|>assistant\\n<think>\\n' }}"
)
HI = {"messages": [{"role": "user", "content": "Hi"}]}
THINKING = ["<thi", "nk>\nThe user ", "says hi.\n</th", "ink>\n\n", "Hello", "!"]


def sse_payloads(text: str) -> list:
    """`data:` payloads of an SSE body, JSON-decoded ('[DONE]' kept as is)."""
    out = []
    for line in text.splitlines():
        if line.startswith("data:"):
            data = line[len("data:") :].strip()
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def test_non_stream_splits_reasoning_from_content():
    engine = ScriptedEngine(chat_template=QWEN3_TEMPLATE)
    engine.queue(THINKING)
    async with scripted_client(engine, reasoning_parser="qwen3") as client:
        r = await client.post("/v1/chat/completions", json=HI)
    assert r.status_code == 200
    message = r.json()["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": "Hello!",
        "reasoning_content": "The user says hi.",
        "reasoning": "The user says hi.",
    }


async def test_without_a_parser_the_tags_stay_in_content():
    engine = ScriptedEngine(chat_template=QWEN3_TEMPLATE)
    engine.queue(THINKING)
    async with scripted_client(engine) as client:
        r = await client.post("/v1/chat/completions", json=HI)
    message = r.json()["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "".join(THINKING)}


async def test_stream_n2_each_choice_has_its_own_splitter():
    engine = ScriptedEngine(chat_template=QWEN3_TEMPLATE)
    other = ["<think>", "Second ", "choice", "</think>", "Bye", "."]
    engine.queue(THINKING, other)
    async with scripted_client(engine, reasoning_parser="qwen3") as client:
        r = await client.post("/v1/chat/completions", json={**HI, "n": 2, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(r.text)
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    assert [c["choices"][0]["delta"] for c in chunks[:2]] == [{"role": "assistant", "content": ""}] * 2
    reasoning = {0: "", 1: ""}
    content = {0: "", 1: ""}
    finishes = {}
    for chunk in chunks[2:]:
        choice = chunk["choices"][0]
        delta, i = choice["delta"], choice["index"]
        assert delta.get("reasoning_content") == delta.get("reasoning")
        if "reasoning_content" in delta:
            assert content[i] == "", "reasoning must come before the answer"
            reasoning[i] += delta["reasoning_content"]
        content[i] += delta.get("content", "")
        assert "<" not in delta.get("content", "") and "<" not in delta.get("reasoning", "")
        if choice["finish_reason"]:
            finishes[i] = choice["finish_reason"]
    assert reasoning == {0: "The user says hi.", 1: "Second choice"}
    assert content == {0: "Hello!", 1: "Bye."}
    assert finishes == {0: "stop", 1: "stop"}


async def test_cut_inside_the_thinking_is_all_reasoning_with_null_content():
    engine = ScriptedEngine(chat_template=QWEN3_TEMPLATE)
    engine.queue(THINKING, THINKING)
    async with scripted_client(engine, reasoning_parser="qwen3") as client:
        r = await client.post("/v1/chat/completions", json={**HI, "max_tokens": 2})
        s = await client.post("/v1/chat/completions", json={**HI, "max_tokens": 2, "stream": True})
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] is None
    assert choice["message"]["reasoning_content"] == "The user"
    deltas = [p["choices"][0] for p in sse_payloads(s.text)[:-1]]
    assert "".join(d["delta"].get("reasoning", "") for d in deltas) == "The user"
    assert "".join(d["delta"].get("content", "") for d in deltas) == ""
    assert deltas[-1]["finish_reason"] == "length"


async def test_template_that_opens_think_starts_the_output_in_reasoning():
    engine = ScriptedEngine(chat_template=OPENING_TEMPLATE)
    only_close = ["Greeting", " detected.", "\n</think>", "\n\nHi there"]
    engine.queue(only_close, only_close)
    async with scripted_client(engine, reasoning_parser="qwen3") as client:
        r = await client.post("/v1/chat/completions", json=HI)
        s = await client.post("/v1/chat/completions", json={**HI, "stream": True})
    assert engine.calls[0].prompt_text.endswith("<|im_start|>assistant\n<think>\n")
    message = r.json()["choices"][0]["message"]
    assert (message["reasoning_content"], message["content"]) == ("Greeting detected.", "Hi there")
    deltas = [p["choices"][0]["delta"] for p in sse_payloads(s.text)[:-1]]
    assert "".join(d.get("reasoning", "") for d in deltas) == "Greeting detected."
    assert "".join(d.get("content", "") for d in deltas) == "Hi there"


async def test_enable_thinking_false_reaches_the_template_and_the_answer_is_content():
    engine = ScriptedEngine(chat_template=QWEN3_TEMPLATE)
    engine.queue(["Paris", "."])
    body = {**HI, "chat_template_kwargs": {"enable_thinking": False}}
    async with scripted_client(engine, reasoning_parser="qwen3") as client:
        r = await client.post("/v1/chat/completions", json=body)
    assert engine.calls[0].prompt_text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    message = r.json()["choices"][0]["message"]
    assert message["content"] == "Paris." and message["reasoning_content"] is None


async def test_deepseek_r1_parser_reads_the_output_as_reasoning_until_think_end():
    engine = ScriptedEngine()
    engine.queue(["Okay, 2+2", " is 4.</think>", "\n\n**4**"], Script(["just text"], FinishReason.STOP))
    async with scripted_client(engine, reasoning_parser="deepseek_r1") as client:
        first = (await client.post("/v1/chat/completions", json=HI)).json()["choices"][0]["message"]
        second = (await client.post("/v1/chat/completions", json=HI)).json()["choices"][0]["message"]
    assert (first["reasoning"], first["content"]) == ("Okay, 2+2 is 4.", "**4**")
    assert (second["reasoning"], second["content"]) == ("just text", None)
