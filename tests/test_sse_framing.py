"""The server's own event framing (`llmhost.server.sse.encode_event`) sends the same bytes sse-starlette's
`ServerSentEvent` would: clients compare streams byte for byte."""

from __future__ import annotations

import json

import pytest
from sse_starlette.event import ServerSentEvent, ensure_bytes

from llmhost.server.sse import encode_event

PAYLOADS = [
    json.dumps({"choices": [{"index": 0, "text": "a line\nand the next"}]}, ensure_ascii=False),
    json.dumps({"text": "héllo – 世界 🙂"}, ensure_ascii=False),
    "[DONE]",
    "",
    "two\nlines",
    "carriage\rreturn\r\nand crlf",
]


@pytest.mark.parametrize("data", PAYLOADS)
def test_bare_data_events_match_sse_starlette(data: str) -> None:
    expected = ServerSentEvent(data=data, sep="\n").encode()
    assert ensure_bytes(encode_event(data), "\n") == expected


@pytest.mark.parametrize("data", PAYLOADS)
@pytest.mark.parametrize("name", ["message_start", "content_block_delta", "bad\nname"])
def test_named_events_match_sse_starlette(name: str, data: str) -> None:
    expected = ServerSentEvent(data=data, event=name, sep="\n").encode()
    assert ensure_bytes(encode_event((name, data)), "\n") == expected


def test_single_line_json_goes_out_as_ready_bytes() -> None:
    assert encode_event('{"a": 1}') == b'data: {"a": 1}\n\n'
    assert encode_event(("ping", "{}")) == b"event: ping\ndata: {}\n\n"
