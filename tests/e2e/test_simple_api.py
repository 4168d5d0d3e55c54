"""The simple chat API (/api/v1, seed 002) against a real llmhost server and the real embedded model.

The stream is read the way seed 002's client read it: line by line, JSON after each `data:` prefix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import RunningServer, start_server, stop_server

pytestmark = pytest.mark.e2e

QUESTION = {
    "message": "What is the capital of France?",
    "history": [],
    "max_new_tokens": 10,
    "temperature": 0,
}


def read_events(response: httpx.Response) -> Iterator[dict]:
    """Seed 002's client loop: every `data:` line is one JSON event."""
    for line in response.iter_lines():
        if line.startswith("data:"):
            yield json.loads(line[len("data:") :].strip())


def stream_events(url: str, body: dict) -> tuple[httpx.Response, list[dict]]:
    with httpx.stream("POST", f"{url}/api/v1/chat/stream", json=body, timeout=120) as r:
        return r, list(read_events(r)) if r.status_code == 200 else []


def test_chat_exact_shape(server):
    r = httpx.post(f"{server.url}/api/v1/chat", json=QUESTION, timeout=120)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"response", "success", "error"}
    assert body["success"] is True and body["error"] is None
    assert isinstance(body["response"], str) and body["response"].strip()


def test_stream_event_order_and_same_text_as_chat(server):
    full = httpx.post(f"{server.url}/api/v1/chat", json=QUESTION, timeout=120).json()["response"]
    r, events = stream_events(server.url, QUESTION)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert events[0] == {"type": "start", "content": ""}
    assert events[-1] == {"type": "end", "content": ""}
    middle = events[1:-1]
    assert middle and all(set(e) == {"type", "content"} and e["type"] == "chunk" for e in middle)
    assert "".join(e["content"] for e in middle) == full


def test_history_turns_are_part_of_the_conversation(server):
    body = {
        "message": "What did I just say my name was?",
        "history": [
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": "Nice to meet you, Ada."},
        ],
        "max_new_tokens": 8,
        "temperature": 0,
    }
    with_history = httpx.post(f"{server.url}/api/v1/chat", json=body, timeout=120).json()
    without = httpx.post(f"{server.url}/api/v1/chat", json={**body, "history": []}, timeout=120).json()
    assert with_history["success"] and without["success"]
    assert with_history["response"] != without["response"]


def test_unicode_is_sent_unescaped(server):
    body = {"message": "请用中文说你好", "max_new_tokens": 8, "temperature": 0}
    with httpx.stream("POST", f"{server.url}/api/v1/chat/stream", json=body, timeout=120) as r:
        raw = "".join(r.iter_text())
    assert "\\u" not in raw


def test_split_thinking_on_a_model_without_thinking_is_all_answer(server):
    """SmolLM2 writes no `<think>`: with the qwen3 rules its whole reply is the answer."""
    raw = httpx.post(f"{server.url}/api/v1/chat", json=QUESTION, timeout=120).json()["response"]
    split = httpx.post(f"{server.url}/api/v1/chat", json={**QUESTION, "split_thinking": True}, timeout=120)
    assert split.json() == {"response": raw, "success": True, "error": None, "thinking": None}
    _, events = stream_events(server.url, {**QUESTION, "split_thinking": True})
    assert {e["type"] for e in events} == {"start", "chunk", "end"}


def test_health_is_cheap_and_never_generates(server):
    def decode_steps() -> float:
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
        line = next(x for x in text.splitlines() if x.startswith("llmhost:decode_steps"))
        return float(line.rsplit(" ", 1)[1])

    before = decode_steps()
    started = time.monotonic()
    for _ in range(5):
        r = httpx.get(f"{server.url}/api/v1/health", timeout=10)
        assert r.status_code == 200
        assert r.json() == {"status": "healthy", "message": "the model is loaded"}
    assert time.monotonic() - started < 2.0
    assert decode_steps() == before


def test_model_info(server, model_path):
    info = httpx.get(f"{server.url}/api/v1/model/info", timeout=10).json()
    assert info["model_name"] == "smol"
    assert info["device"] == "cpu"
    assert info["is_loaded"] is True
    assert info["model_size"] == os.path.getsize(model_path)
    assert isinstance(info["model_size"], int)


@pytest.mark.parametrize(
    "body",
    [
        {"history": []},
        {"message": None},
        {"message": "hi", "history": [{"role": "robot", "content": "beep"}]},
        {"message": "hi", "history": [["user", "hi"]]},
        {"message": "hi", "max_new_tokens": "many"},
        "just a string",
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/chat", "/api/v1/chat/stream"])
def test_bad_input_is_4xx_in_the_face_shape(server, path, body):
    r = httpx.post(f"{server.url}{path}", json=body, timeout=30)
    assert r.status_code == 400
    out = r.json()
    assert set(out) == {"response", "success", "error"}
    assert out["success"] is False and out["response"] == "" and out["error"]


def test_bad_input_elsewhere_keeps_the_openai_shape(server):
    r = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "smol"}, timeout=30)
    assert r.status_code == 400 and set(r.json()) == {"error"}


def test_prompt_too_long_is_400_in_the_face_shape(server):
    r = httpx.post(f"{server.url}/api/v1/chat", json={"message": "word " * 3000}, timeout=30)
    assert r.status_code == 400 and r.json()["success"] is False
    assert "context length" in r.json()["error"]


def test_an_invalid_reasoning_parser_is_refused_at_start():
    proc = subprocess.run(
        [sys.executable, "-m", "llmhost", "serve", "--reasoning-parser", "granite"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "reasoning_parser" in proc.stderr


# -- a server of its own: unload/load, and the deepseek_r1 reasoning parser ----------------------
@pytest.fixture(scope="module")
def r1_server(tmp_path_factory) -> Iterator[RunningServer]:
    srv = start_server(
        tmp_path_factory.mktemp("r1"),
        "--max-model-len",
        "512",
        "--max-num-seqs",
        "4",
        "--served-model-name",
        "smol-r1",
        "--reasoning-parser",
        "deepseek_r1",
    )
    yield srv
    stop_server(srv)


def test_deepseek_r1_parser_over_both_faces(r1_server):
    """SmolLM2 never writes `</think>`, so under deepseek_r1 rules its whole output is reasoning."""
    client = openai.OpenAI(base_url=f"{r1_server.url}/v1", api_key="x", max_retries=0, timeout=120)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    r = client.chat.completions.create(model="smol-r1", messages=messages, max_tokens=8, temperature=0)
    message = r.choices[0].message
    assert message.content is None
    assert message.model_extra["reasoning_content"] == message.model_extra["reasoning"]
    assert message.model_extra["reasoning_content"].strip()
    chunks = list(
        client.chat.completions.create(
            model="smol-r1", messages=messages, max_tokens=8, temperature=0, stream=True
        )
    )
    streamed = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks)
    assert streamed == message.model_extra["reasoning_content"]
    assert all(not c.choices[0].delta.content for c in chunks)

    # The simple face splits by default on this server, and streams raw when asked not to.
    _, events = stream_events(r1_server.url, QUESTION)
    assert [e["type"] for e in events][:2] == ["start", "thinking"] and events[-1]["type"] == "end"
    assert {e["type"] for e in events} == {"start", "thinking", "end"}
    _, raw = stream_events(r1_server.url, {**QUESTION, "split_thinking": False})
    assert {e["type"] for e in raw} == {"start", "chunk", "end"}
    assert "".join(e["content"] for e in raw if e["type"] == "chunk").strip() == "".join(
        e["content"] for e in events if e["type"] == "thinking"
    )


def test_unload_and_load_again(r1_server):
    url = r1_server.url
    assert httpx.post(f"{url}/api/v1/model/load", timeout=60).json() == {
        "status": "already_loaded",
        "message": "the model is already loaded",
    }

    # A stream in flight when the model is unloaded ends with an error, and the server keeps serving.
    in_flight: list[str] = []
    started = threading.Event()

    def long_stream() -> None:
        body = {"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    in_flight.append(line)
                    started.set()

    reader = threading.Thread(target=long_stream)
    reader.start()
    assert started.wait(30)
    u = httpx.post(f"{url}/api/v1/model/unload", timeout=60)
    assert u.status_code == 200 and u.json()["status"] == "unloaded"
    reader.join(30)
    assert not reader.is_alive()
    assert '"error"' in in_flight[-1] or in_flight[-1] == "data: [DONE]" and '"error"' in in_flight[-2]

    h = httpx.get(f"{url}/api/v1/health", timeout=10)
    assert h.status_code == 503 and h.json()["status"] == "unhealthy"
    assert httpx.get(f"{url}/health", timeout=10).status_code == 503
    info = httpx.get(f"{url}/api/v1/model/info", timeout=10).json()
    assert info["is_loaded"] is False
    r = httpx.post(f"{url}/api/v1/chat", json=QUESTION, timeout=30)
    assert r.status_code == 503 and r.json()["success"] is False
    o = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert o.status_code == 503 and "error" in o.json()
    assert httpx.post(f"{url}/api/v1/model/unload", timeout=30).json()["status"] == "not_loaded"

    # Concurrent loads load once.
    results: list[dict] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(httpx.post(f"{url}/api/v1/model/load", timeout=120).json())
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(x["status"] for x in results) == ["already_loaded", "already_loaded", "loaded"]

    assert httpx.get(f"{url}/api/v1/health", timeout=10).status_code == 200
    assert httpx.get(f"{url}/api/v1/model/info", timeout=10).json()["is_loaded"] is True
    again = httpx.post(f"{url}/api/v1/chat", json={**QUESTION, "split_thinking": False}, timeout=120).json()
    assert again["success"] is True and again["response"].strip()
