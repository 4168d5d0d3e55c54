"""`llmhost.client.sse` and the clients' streams over real httpx clients whose transport plays scripted
SSE bytes (`httpx.MockTransport`): how events are framed, split and ended, and how failures surface."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from llmhost.client import AsyncClient, Client, LlmhostHTTPError, LlmhostStreamError
from llmhost.client.sse import NotAnEventStream, aiter_sse_data, is_done, iter_sse_data

SSE = {"content-type": "text/event-stream; charset=utf-8"}


class Chunks(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that arrives in exactly these network chunks, to a sync or an async client."""

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


def _answering(*chunks: bytes, status: int = 200, headers: dict[str, str] = SSE) -> httpx.MockTransport:
    return httpx.MockTransport(
        lambda request: httpx.Response(status, headers=headers, stream=Chunks(*chunks))
    )


def _read_sync(transport: httpx.MockTransport) -> list[str]:
    with httpx.Client(transport=transport) as http, http.stream("GET", "http://upstream/") as response:
        return list(iter_sse_data(response))


async def _read_async(transport: httpx.MockTransport) -> list[str]:
    async with (
        httpx.AsyncClient(transport=transport) as http,
        http.stream("GET", "http://upstream/") as response,
    ):
        return [data async for data in aiter_sse_data(response)]


@pytest.fixture(params=["sync", "async"])
def read(request: pytest.FixtureRequest) -> Callable:
    """The payloads of one scripted stream, read with `iter_sse_data` or `aiter_sse_data`."""

    async def read(*chunks: bytes, headers: dict[str, str] = SSE) -> list[str]:
        transport = _answering(*chunks, headers=headers)
        return _read_sync(transport) if request.param == "sync" else await _read_async(transport)

    return read


# -- decoding ---------------------------------------------------------------------------------------
async def test_multi_line_data_is_joined_with_newlines(read):
    body = b'data: {"text":\ndata: "two lines"}\n\ndata:no space\ndata:  two spaces\n\n'
    assert await read(body) == ['{"text":\n"two lines"}', "no space\n two spaces"]


async def test_crlf_and_cr_line_endings(read):
    body = b"data: one\r\ndata: two\r\n\r\ndata: three\r\rdata: four\n\n"
    assert await read(body) == ["one\ntwo", "three", "four"]


async def test_comments_pings_and_events_without_data_are_skipped(read):
    body = b": ping\n\n: keep-alive\ndata: x\n\nevent: ping\n\nid: 7\n\n\n\nretry: 10\nevent: y\ndata: z\n\n"
    assert await read(body) == ["x", "z"]


async def test_an_event_split_across_network_chunks_is_put_back_together(read):
    chunks = (b"da", b'ta: {"t": "h\xc3', b'\xa9"}\r', b"\n\r", b"\ndata: [DO", b"NE]\n", b"\n")
    assert await read(*chunks) == ['{"t": "h\u00e9"}', "[DONE]"]


async def test_an_unterminated_last_event_is_dropped_as_the_spec_says(read):
    assert await read(b"data: whole\n\ndata: cut") == ["whole"]


async def test_an_answer_that_is_not_an_event_stream_is_a_value_error(read):
    with pytest.raises(NotAnEventStream, match="application/json") as err:
        await read(b'{"choices": []}', headers={"content-type": "application/json"})
    assert isinstance(err.value, ValueError) and not isinstance(err.value, httpx.TransportError)


def test_done_is_the_payload_not_a_prefix():
    assert is_done("[DONE]") and is_done(" [DONE] ")
    assert not is_done('{"text": "[DONE]"}') and not is_done("[DONE] later")


# -- the clients ------------------------------------------------------------------------------------
def _client(transport: httpx.MockTransport) -> Client:
    client = Client("http://llmhost")
    client._http = httpx.Client(base_url=client.base_url, transport=transport)
    return client


def _async_client(transport: httpx.MockTransport) -> AsyncClient:
    client = AsyncClient("http://llmhost")
    client._http = httpx.AsyncClient(base_url=client.base_url, transport=transport)
    return client


def _event(payload: object) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


CHUNK = {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}
USAGE = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
OPENAI_STREAM = (
    b": ping\n\n",
    b'data: {"choices": [{"index": 0,\r\ndata:  "delta": {"content": "Hi"}}]}\r\n\r\n',
    _event(USAGE),
    b"data: [DONE]\n\n",
    b"data: not read after [DONE]\n\n",
)


def test_chat_completion_stream_joins_lines_and_stops_at_done():
    with _client(_answering(*OPENAI_STREAM)) as client:
        assert list(client.chat_completion_stream([{"role": "user", "content": "hi"}])) == [CHUNK, USAGE]


async def test_async_chat_completion_stream_joins_lines_and_stops_at_done():
    async with _async_client(_answering(*OPENAI_STREAM)) as client:
        chunks = [c async for c in client.chat_completion_stream([{"role": "user", "content": "hi"}])]
    assert chunks == [CHUNK, USAGE]


def test_simple_chat_stream_yields_error_events_and_skips_done():
    events = [{"type": "start", "content": ""}, {"type": "error", "content": "the engine failed"}]
    with _client(_answering(*map(_event, events), b"data: [DONE]\n\n")) as client:
        assert list(client.chat_stream("hi")) == events


def test_an_error_event_after_the_200_raises_stream_error():
    error = {"error": {"message": "the engine failed", "type": "internal_server_error"}}
    with _client(_answering(_event(CHUNK), _event(error), b"data: [DONE]\n\n")) as client:
        stream = client.chat_completion_stream([{"role": "user", "content": "hi"}])
        assert next(stream) == CHUNK
        with pytest.raises(LlmhostStreamError, match="the engine failed"):
            next(stream)


async def test_an_error_status_is_raised_before_any_event():
    body = json.dumps({"error": {"message": "prompt too long", "type": "invalid_request_error"}}).encode()
    transport = _answering(body, status=400, headers={"content-type": "application/json"})
    async with _async_client(transport) as client:
        with pytest.raises(LlmhostHTTPError) as err:
            [c async for c in client.chat_completion_stream([{"role": "user", "content": "hi"}])]
    assert err.value.status_code == 400 and err.value.message == "prompt too long"


def test_a_200_that_is_not_an_event_stream_is_an_http_error_not_a_lost_connection():
    transport = _answering(b'{"response": "hi"}', headers={"content-type": "application/json"})
    with _client(transport) as client, pytest.raises(LlmhostHTTPError) as err:
        list(client.chat_stream("hi"))
    assert err.value.status_code == 200 and "not an event stream" in err.value.message
