"""The simple chat face (/api/v1, seed 002) in-process around a ScriptedEngine: thinking split,
event order, errors in the face's own shape, load/unload. The real-model tier is tests/e2e/test_simple_api.py.
"""

import asyncio
import json
from pathlib import Path

import pytest

from llmhost.errors import EngineError
from tests.scripted_engine import ScriptedEngine, scripted_client

QWEN3_TEMPLATE = (Path(__file__).parent.parent / "fixtures" / "qwen3_chat_template.jinja").read_text()
THINKING = ["<thi", "nk>\nA greeting.", "\n</think>", "\n\n你好", "!"]
RAW = "".join(THINKING)
ASK = {"message": "Hi", "history": []}


def events(text: str) -> list[dict]:
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]


def kinds(evs: list[dict]) -> list[str]:
    """Event types with repeats collapsed: ['start', 'chunk', 'end']."""
    out: list[str] = []
    for e in evs:
        if not out or out[-1] != e["type"]:
            out.append(e["type"])
    return out


async def test_chat_returns_the_raw_text_by_default():
    engine = ScriptedEngine(chat_template=QWEN3_TEMPLATE)
    engine.queue(THINKING)
    async with scripted_client(engine) as client:
        r = await client.post("/api/v1/chat", json=ASK)
    assert r.status_code == 200
    assert r.json() == {"response": RAW, "success": True, "error": None}


async def test_chat_split_thinking_returns_the_answer_and_the_thinking():
    engine = ScriptedEngine(chat_template=QWEN3_TEMPLATE)
    engine.queue(THINKING)
    async with scripted_client(engine) as client:
        r = await client.post("/api/v1/chat", json={**ASK, "split_thinking": True})
    assert r.json() == {"response": "你好!", "success": True, "error": None, "thinking": "A greeting."}


async def test_stream_raw_tags_stream_inside_chunks():
    engine = ScriptedEngine(chat_template=QWEN3_TEMPLATE)
    engine.queue(THINKING)
    async with scripted_client(engine) as client:
        r = await client.post("/api/v1/chat/stream", json=ASK)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    evs = events(r.text)
    assert evs[0] == {"type": "start", "content": ""} and evs[-1] == {"type": "end", "content": ""}
    assert kinds(evs) == ["start", "chunk", "end"]
    assert "".join(e["content"] for e in evs if e["type"] == "chunk") == RAW
    assert "你好" in r.text  # ensure_ascii=False: not \\u escapes


@pytest.mark.parametrize(
    "settings, request_flag, is_split",
    [
        ({}, True, True),
        ({}, None, False),
        ({"reasoning_parser": "qwen3"}, None, True),
        ({"reasoning_parser": "qwen3"}, False, False),
    ],
)
async def test_stream_split_thinking_request_and_server_setting(settings, request_flag, is_split):
    engine = ScriptedEngine(chat_template=QWEN3_TEMPLATE)
    engine.queue(THINKING)
    body = ASK if request_flag is None else {**ASK, "split_thinking": request_flag}
    async with scripted_client(engine, **settings) as client:
        evs = events((await client.post("/api/v1/chat/stream", json=body)).text)
    if is_split:
        assert kinds(evs) == ["start", "thinking", "chunk", "end"]
        assert "".join(e["content"] for e in evs if e["type"] == "thinking") == "A greeting."
        assert "".join(e["content"] for e in evs if e["type"] == "chunk") == "你好!"
    else:
        assert kinds(evs) == ["start", "chunk", "end"]


async def test_stream_split_with_a_template_that_opens_think():
    opening = QWEN3_TEMPLATE.replace(
        "{{- '<|im_start|>assistant\\n' }}", "{{- '<|im_start|>assistant\\n<think>\\n' }}"
    )
    engine = ScriptedEngine(chat_template=opening)
    engine.queue(["Plan", ": greet.</th", "ink>\n\nHey"])
    async with scripted_client(engine, reasoning_parser="qwen3") as client:
        evs = events((await client.post("/api/v1/chat/stream", json=ASK)).text)
    assert kinds(evs) == ["start", "thinking", "chunk", "end"]
    assert [e["content"] for e in evs if e["type"] == "thinking"] == ["Plan", ": greet."]
    assert [e["content"] for e in evs if e["type"] == "chunk"] == ["Hey"]


async def test_error_after_the_stream_started_is_an_error_event():
    engine = ScriptedEngine()
    engine.queue(["Hel", EngineError("the GPU caught fire")])
    async with scripted_client(engine) as client:
        r = await client.post("/api/v1/chat/stream", json=ASK)
    assert r.status_code == 200
    evs = events(r.text)
    assert evs == [
        {"type": "start", "content": ""},
        {"type": "chunk", "content": "Hel"},
        {"type": "error", "content": "the GPU caught fire"},
    ]


async def test_history_and_message_are_rendered_with_the_model_template_user_last():
    engine = ScriptedEngine(chat_template=QWEN3_TEMPLATE)
    body = {
        "message": "And 3+3?",
        "history": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"},
        ],
        "enable_thinking": False,
        "max_new_tokens": 7,
        "temperature": 0,
    }
    async with scripted_client(engine) as client:
        assert (await client.post("/api/v1/chat", json=body)).json()["success"] is True
    call = engine.calls[0]
    assert call.prompt_text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n"
        "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert call.params.max_tokens == 7 and call.params.temperature == 0.0


async def test_sampling_defaults_follow_qwen3_generation_config():
    engine = ScriptedEngine()
    async with scripted_client(engine) as client:
        await client.post("/api/v1/chat", json={"message": "Hi"})  # history may be omitted
    params = engine.calls[0].params
    assert (params.temperature, params.top_p, params.top_k, params.max_tokens) == (0.6, 0.95, 20, None)


@pytest.mark.parametrize(
    "body, where",
    [
        ({"history": []}, "message"),
        ({"message": 5}, "message"),
        ({"message": "x", "history": "nope"}, "history"),
        ({"message": "x", "history": [{"role": "wizard", "content": "x"}]}, "history.0.role"),
        ({"message": "x", "history": [{"role": "user"}]}, "history.0.content"),
        ({"message": "x", "temperature": "hot"}, "temperature"),
        ({"message": "x", "max_new_tokens": 0}, "max_new_tokens"),
        ({"message": "x", "split_thinking": "yes"}, "split_thinking"),
        ([1, 2], ""),
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/chat", "/api/v1/chat/stream"])
async def test_bad_input_is_400_in_the_face_shape(path, body, where):
    async with scripted_client(ScriptedEngine()) as client:
        r = await client.post(path, json=body)
    assert r.status_code == 400, r.text
    out = r.json()
    assert set(out) == {"response", "success", "error"}
    assert out["response"] == "" and out["success"] is False and where in out["error"]


async def test_invalid_json_is_400_in_the_face_shape_and_the_openai_face_keeps_its_shape():
    async with scripted_client(ScriptedEngine()) as client:
        r = await client.post(
            "/api/v1/chat", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 400 and r.json()["success"] is False
        o = await client.post("/v1/chat/completions", json={"model": "x"})
    assert o.status_code == 400 and set(o.json()) == {"error"} and o.json()["error"]["param"] == "messages"


async def test_prompt_too_long_is_400_in_the_face_shape():
    async with scripted_client(ScriptedEngine(max_model_len=64)) as client:
        for path in ("/api/v1/chat", "/api/v1/chat/stream"):
            r = await client.post(path, json={"message": "word " * 50})
            assert r.status_code == 400 and r.json()["success"] is False


async def test_health_and_model_info_when_loaded():
    async with scripted_client(ScriptedEngine(), served_names=["qwen3-8b"]) as client:
        h = await client.get("/api/v1/health")
        i = await client.get("/api/v1/model/info")
    assert h.status_code == 200 and h.json() == {"status": "healthy", "message": "the model is loaded"}
    info = i.json()
    assert {k: info[k] for k in ("model_name", "device", "is_loaded", "model_size")} == {
        "model_name": "qwen3-8b",
        "device": "cpu",
        "is_loaded": True,
        "model_size": 1234,
    }


async def test_unload_then_load_cycle():
    engine = ScriptedEngine()
    async with scripted_client(engine) as client:
        assert (await client.post("/api/v1/model/load")).json() == {
            "status": "already_loaded",
            "message": "the model is already loaded",
        }
        u = await client.post("/api/v1/model/unload")
        assert u.json()["status"] == "unloaded"
        assert (await client.post("/api/v1/model/unload")).json()["status"] == "not_loaded"
        h = await client.get("/api/v1/health")
        assert h.status_code == 503 and h.json()["status"] == "unhealthy"
        assert (await client.get("/health")).status_code == 503
        info = (await client.get("/api/v1/model/info")).json()
        assert info["is_loaded"] is False and info["model_size"] == 1234
        for path in ("/api/v1/chat", "/api/v1/chat/stream"):
            r = await client.post(path, json=ASK)
            assert r.status_code == 503 and r.json()["success"] is False and "unloaded" in r.json()["error"]
        o = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
        assert o.status_code == 503 and "error" in o.json()
        assert (await client.post("/api/v1/model/load")).json()["status"] == "loaded"
        assert (await client.get("/api/v1/health")).status_code == 200
        assert (await client.post("/api/v1/chat", json=ASK)).json() == {
            "response": "ok",
            "success": True,
            "error": None,
        }
    assert engine.num_starts == 2


async def test_concurrent_loads_load_once():
    engine = ScriptedEngine()
    async with scripted_client(engine) as client:
        await client.post("/api/v1/model/unload")
        answers = await asyncio.gather(*(client.post("/api/v1/model/load") for _ in range(5)))
    statuses = sorted(a.json()["status"] for a in answers)
    assert statuses == ["already_loaded"] * 4 + ["loaded"]
    assert engine.num_starts == 2


async def test_unload_fails_the_stream_in_flight_with_an_error_event():
    engine = ScriptedEngine(piece_delay_s=0.02)
    engine.queue([f"w{i} " for i in range(100)])
    async with scripted_client(engine) as client:

        async def read() -> list[dict]:
            async with client.stream("POST", "/api/v1/chat/stream", json=ASK) as r:
                return events("".join([line + "\n" async for line in r.aiter_lines()]))

        reader = asyncio.create_task(read())
        await asyncio.sleep(0.2)
        await client.post("/api/v1/model/unload")
        evs = await asyncio.wait_for(reader, 10)
    assert evs[0]["type"] == "start" and evs[-1]["type"] == "error"
    assert "shutting down" in evs[-1]["content"]
