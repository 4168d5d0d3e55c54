"""`llmhost.client` against real servers: every method, sync and async, and how failures surface."""

from __future__ import annotations

import pytest

from llmhost.client import (
    AsyncClient,
    Client,
    LlmhostClientError,
    LlmhostConnectionError,
    LlmhostHTTPError,
    LlmhostStreamError,
    LlmhostTimeoutError,
    server_message,
)
from tests.conftest import TEST_MAX_MODEL_LEN, free_port, start_server, stop_server

pytestmark = pytest.mark.e2e

GREEDY = {"temperature": 0.0, "max_new_tokens": 12}


@pytest.fixture(scope="module")
def client(server):
    with Client(server.url, timeout=120) as c:
        yield c


# -- blocking client -------------------------------------------------------------------------------
def test_predict_single_and_batch(client):
    one = client.predict("Name a fruit.", max_new_tokens=8)
    assert isinstance(one, str) and one
    many = client.predict(["Name a fruit.", "Name a color."], max_new_tokens=8)
    assert isinstance(many, list) and len(many) == 2 and many[0] == one


def test_chat_and_chat_stream_agree(client):
    history = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada!"},
    ]
    answer = client.chat("What is my name?", history=history, **GREEDY)
    assert isinstance(answer, str) and answer
    events = list(client.chat_stream("What is my name?", history=history, **GREEDY))
    types = [e["type"] for e in events]
    assert types[0] == "start" and types[-1] == "end" and set(types[1:-1]) <= {"chunk"}
    assert "".join(e["content"] for e in events if e["type"] == "chunk") == answer


def test_health_model_info_and_load(client):
    health = client.health()
    assert health["status"] == "healthy" and health["model_loaded"] is True
    info = client.model_info()
    assert info["model_name"] == "smol" and info["is_loaded"] is True and info["model_size"] > 0
    assert client.load_model()["status"] == "already_loaded"
    assert client.wait_until_ready(timeout_s=5)["model_loaded"] is True
    assert client.models()[0] == "smol"


def test_chat_completion_stream_ends_with_usage(client):
    chunks = list(
        client.chat_completion_stream([{"role": "user", "content": "Hi"}], max_tokens=5, temperature=0)
    )
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"] == [] and 0 < chunks[-1]["usage"]["completion_tokens"] <= 5


def test_http_errors_carry_status_and_the_server_message_whatever_the_shape(client):
    with pytest.raises(LlmhostHTTPError) as err:  # predict face: {"detail": …}
        client.predict([])
    assert err.value.status_code == 422 and "empty list" in err.value.message
    with pytest.raises(LlmhostHTTPError) as err:  # simple face: {"success": false, "error": …}
        client.chat("hi", temperature="hot")
    assert err.value.status_code == 400 and "temperature" in err.value.message
    with pytest.raises(LlmhostHTTPError) as err:  # same, on a stream: raised before any event
        list(client.chat_stream("hi", max_new_tokens=0))
    assert err.value.status_code == 400 and "max_new_tokens" in err.value.message
    with pytest.raises(LlmhostHTTPError) as err:  # OpenAI face: {"error": {"message": …}}
        list(client.chat_completion_stream([{"role": "user", "content": "hi"}], model="nope"))
    assert err.value.status_code == 404 and "nope" in err.value.message
    assert isinstance(err.value, LlmhostClientError)
    assert str(err.value).startswith("HTTP 404: ")


def test_timeout_is_its_own_error(server):
    with Client(server.url, timeout=0.05) as hurried:
        with pytest.raises(LlmhostTimeoutError):
            hurried.predict("Tell a long story.", max_new_tokens=500)


def test_unreachable_server_is_a_connection_error():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with Client(url, timeout=5) as c:
        for call in (c.health, lambda: c.predict("hi"), lambda: list(c.chat_stream("hi"))):
            with pytest.raises(LlmhostConnectionError) as err:
                call()
            assert url in str(err.value) and not isinstance(err.value, LlmhostTimeoutError)


def test_api_key_is_sent_as_bearer(tmp_path):
    srv = start_server(tmp_path, "--max-model-len", str(TEST_MAX_MODEL_LEN), "--api-key", "s3cret")
    try:
        with Client(srv.url, timeout=60) as anonymous:
            with pytest.raises(LlmhostHTTPError) as err:
                anonymous.predict("hi", max_new_tokens=2)
            assert err.value.status_code == 401 and "API key" in err.value.message
        with Client(srv.url, timeout=60, api_key="s3cret") as keyed:
            assert keyed.predict("hi", max_new_tokens=2)
            assert keyed.chat("hi", max_new_tokens=2)
    finally:
        stop_server(srv)


# -- asyncio client --------------------------------------------------------------------------------
async def test_async_client_every_method(server):
    async with AsyncClient(server.url, timeout=120) as c:
        assert (await c.health())["model_loaded"] is True
        assert (await c.wait_until_ready(timeout_s=5))["model_loaded"] is True
        assert (await c.model_info())["is_loaded"] is True
        assert (await c.load_model())["status"] == "already_loaded"
        assert (await c.models())[0] == "smol"
        one = await c.predict("Name a fruit.", max_new_tokens=8)
        assert await c.predict(["Name a fruit."], max_new_tokens=8) == [one]
        answer = await c.chat("Say hello.", **GREEDY)
        events = [e async for e in c.chat_stream("Say hello.", **GREEDY)]
        assert events[0]["type"] == "start" and events[-1]["type"] == "end"
        assert "".join(e["content"] for e in events if e["type"] == "chunk") == answer
        chunks = [
            ch async for ch in c.chat_completion_stream([{"role": "user", "content": "Hi"}], max_tokens=3)
        ]
        assert chunks[-1]["usage"]["completion_tokens"] <= 3
        with pytest.raises(LlmhostHTTPError) as err:
            await c.predict(["ok", 3])  # type: ignore[list-item]
        assert err.value.status_code == 422 and "prompt[1]" in err.value.message


async def test_async_client_unreachable_server():
    async with AsyncClient(f"http://127.0.0.1:{free_port()}", timeout=5) as c:
        with pytest.raises(LlmhostConnectionError):
            await c.health()
        with pytest.raises(LlmhostConnectionError):
            [e async for e in c.chat_stream("hi")]


# -- wire helpers ----------------------------------------------------------------------------------
def test_server_message_reads_every_face_shape():
    assert server_message({"error": {"message": "m1", "type": "x"}}, "f") == "m1"
    assert server_message({"response": "", "success": False, "error": "m2"}, "f") == "m2"
    assert server_message({"detail": "m3"}, "f") == "m3"
    assert server_message({"detail": [{"msg": "a"}, {"msg": "b"}]}, "f") == "a; b"
    assert server_message({"status": "error", "message": "m4"}, "f") == "m4"
    assert server_message("not json", "fallback") == "fallback"


def test_an_error_event_in_an_openai_stream_raises():
    from llmhost.client import _chunk

    with pytest.raises(LlmhostStreamError) as err:
        _chunk('{"error": {"message": "the engine failed", "type": "internal_server_error"}}')
    assert err.value.message == "the engine failed"
    assert _chunk("[DONE]") is None
