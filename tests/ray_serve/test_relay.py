"""The relay between the ingress and a replica (llmhost/ray_serve/relay.py), without Ray: the real app
(`create_app`) around the scripted engine, driven the way a replica drives it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from llmhost.app import create_app
from llmhost.config import Settings
from llmhost.ray_serve.relay import RelayedRequest, ResponseCut, coalesce, read_body, run_app
from tests.scripted_engine import ScriptedEngine


def request(method: str, path: str, body: object = None, *headers: tuple[bytes, bytes]) -> RelayedRequest:
    data = json.dumps(body).encode() if body is not None else b""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": [(b"content-type", b"application/json"), *headers], "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5000), "app": object(),  # the ingress server's own: not carried
    }  # fmt: skip
    return RelayedRequest.from_scope(scope, data)


async def answer(app, relayed: RelayedRequest) -> tuple[dict, bytes, int]:
    """The response start, the whole body and the number of batches it came in."""
    start, chunks, num_batches = None, [], 0
    async for batch in run_app(app, relayed, extra_headers=[(b"x-llmhost-replica", b"r1")]):
        num_batches += 1
        for message in batch:
            if message["type"] == "http.response.start":
                start = message
            else:
                chunks.append(message.get("body", b""))
    return start, b"".join(chunks), num_batches


@pytest.fixture
async def served() -> AsyncIterator[tuple[FastAPI, ScriptedEngine]]:
    engine = ScriptedEngine(piece_delay_s=0.01, max_num_seqs=1)
    app = create_app(Settings(max_num_seqs=1, max_queued_requests=0), engine, served_names=["scripted"])
    async with app.router.lifespan_context(app):  # as a replica does
        while not app.state.llmhost.is_ready:
            await asyncio.sleep(0.01)
        engine.calls.clear()
        yield app, engine


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


async def test_a_chat_completion_comes_back_whole_with_the_replica_header(served):
    app, engine = served
    engine.queue(["Hel", "lo"])
    start, body, _ = await answer(app, request("POST", "/v1/chat/completions", CHAT))
    assert start["status"] == 200
    assert (b"x-llmhost-replica", b"r1") in start["headers"]
    assert json.loads(body)["choices"][0]["message"]["content"] == "Hello"


async def test_a_stream_arrives_event_by_event(served):
    app, engine = served
    engine.queue(["a", "b", "c", "d"])
    start, body, num_batches = await answer(
        app, request("POST", "/v1/chat/completions", {**CHAT, "stream": True})
    )
    assert (
        start["status"] == 200 and (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
    )
    text = body.decode()
    assert text.rstrip().endswith("data: [DONE]") and '"content": "d"' in text
    assert num_batches > 2  # not buffered into one message


async def test_errors_keep_their_status_and_shape(served):
    app, _ = served
    start, body, _ = await answer(app, request("POST", "/api/v1/chat", {"message": 5}))
    assert start["status"] == 400 and json.loads(body)["success"] is False
    start, body, _ = await answer(app, request("GET", "/nowhere"))
    assert start["status"] == 404 and "error" in json.loads(body)


async def test_a_full_replica_answers_429_with_retry_after(served):
    app, engine = served
    engine.queue(["x"] * 50)
    slow = asyncio.ensure_future(
        answer(app, request("POST", "/v1/chat/completions", {**CHAT, "max_tokens": 50}))
    )
    while not engine.calls:
        await asyncio.sleep(0.01)
    start, body, _ = await answer(app, request("POST", "/v1/chat/completions", CHAT))
    assert start["status"] == 429 and any(k.lower() == b"retry-after" for k, _ in start["headers"])
    assert json.loads(body)["error"]["type"] == "rate_limit_error"
    assert (await slow)[0]["status"] == 200


async def test_a_consumer_that_stops_early_disconnects_the_stream_and_frees_the_engine(served):
    app, engine = served
    engine.queue(["x"] * 500)
    stream = run_app(
        app, request("POST", "/v1/chat/completions", {**CHAT, "stream": True, "max_tokens": 500})
    )
    async for _ in stream:
        if engine.stats().num_running:
            break
    await stream.aclose()  # what Serve does when the ingress cancels the call
    for _ in range(100):
        if engine.stats().num_running == 0:
            break
        await asyncio.sleep(0.02)
    assert engine.stats().num_running == 0


async def test_an_app_that_fails_mid_response_is_cut_and_one_that_fails_before_gets_a_500():
    app = FastAPI()

    @app.get("/mid")
    async def mid() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first"
            raise RuntimeError("boom")

        return StreamingResponse(chunks())

    @app.get("/before")
    async def before() -> None:
        raise RuntimeError("boom")

    with pytest.raises(ResponseCut):
        await answer(app, request("GET", "/mid"))
    start, body, _ = await answer(app, request("GET", "/before"))  # Starlette answered 500, then raised
    assert start["status"] == 500


async def test_read_body_stops_past_the_limit_and_notices_a_disconnect():
    messages = iter([{"type": "http.request", "body": b"x" * 10, "more_body": True}] * 5)

    async def receive() -> dict:
        return next(messages)

    body, is_connected = await read_body(receive, max_bytes=25)
    assert is_connected and len(body) == 30  # over the limit: the replica's 413 follows

    async def gone() -> dict:
        return {"type": "http.disconnect"}

    assert await read_body(gone, 10) == (b"", False)


def test_body_messages_that_queued_up_cross_as_one():
    start = {"type": "http.response.start", "status": 200, "headers": []}
    body = [{"type": "http.response.body", "body": b, "more_body": True} for b in (b"a", b"b", b"c")]
    end = {"type": "http.response.body", "body": b"", "more_body": False}
    assert coalesce([start, *body, end]) == [
        start,
        {"type": "http.response.body", "body": b"abc", "more_body": False},
    ]
    assert coalesce(body[:2]) == [{"type": "http.response.body", "body": b"ab", "more_body": True}]
    assert coalesce([]) == []
