"""The upstream engine reading a `/v1/completions` stream from a scripted transport (no server, no model):
events as the SSE spec frames them, `[DONE]`, and what an unreadable stream becomes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from llmhost.engines.upstream.backends import AttachedBackend
from llmhost.engines.upstream.engine import UpstreamEngine
from llmhost.errors import EngineError
from llmhost.models.source import ModelSource
from llmhost.types import Delta, FinishReason, SamplingParams, Usage

SSE = {"content-type": "text/event-stream"}


class OneIdPerCharacter:
    """The local tokenizer, where the server sends no token ids."""

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        return [ord(c) for c in text]


def _engine(body: bytes, headers: dict[str, str] = SSE) -> tuple[UpstreamEngine, AttachedBackend]:
    backend = AttachedBackend("http://upstream/v1", {})
    backend.base_url, backend.down_reason = backend.url, None
    engine = UpstreamEngine(
        ModelSource(Path("/models/m.gguf"), "gguf", "m"),
        [backend],
        engine_name="vllm",
        model_name="m",
        upstream_model="m",
        prompt_as_tokens=True,
        max_model_len=64,
        max_num_seqs=4,
    )
    engine._tokenizer = OneIdPerCharacter()
    engine._client = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(200, headers=headers, content=body))
    )
    return engine, backend


async def _deltas(engine: UpstreamEngine, backend: AttachedBackend) -> list[Delta]:
    stream = engine._stream(backend, {"prompt": [1, 2, 3]}, 3, SamplingParams())
    return [delta async for delta in stream]


def _multi_line_event(payload: dict) -> bytes:
    """One event whose JSON is cut over several `data:` lines (legal SSE; each line alone is not JSON)."""
    lines = json.dumps(payload, indent=1).splitlines()
    return b"".join(f"data: {line}\n".encode() for line in lines) + b"\n"


def _choice(text: str, ids: Sequence[int] | None = None, finish: str | None = None) -> dict:
    choice: dict = {"index": 0, "text": text, "finish_reason": finish}
    if ids is not None:
        choice["token_ids"] = list(ids)
    return {"choices": [choice]}


async def test_a_multi_line_data_event_is_one_chunk():
    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 3}}
    body = (
        b": ping\n\n"
        + _multi_line_event(_choice("Hi", [7, 8]))
        + b'data: {"choices": [{"index": 0, "text": "!",\r\ndata: "finish_reason": "stop"}]}\r\n\r\n'
        + _multi_line_event(usage)
        + b"data: [DONE]\n\n"
    )
    engine, backend = _engine(body)
    deltas = await _deltas(engine, backend)
    assert [(d.text, d.token_ids, d.finish_reason) for d in deltas] == [
        ("Hi", [7, 8], None),
        ("!", [ord("!")], FinishReason.STOP),
    ]
    assert deltas[-1].usage == Usage(3, 3)
    assert backend.in_flight == 0


async def test_an_error_event_becomes_an_engine_error():
    body = _multi_line_event({"error": {"message": "CUDA out of memory"}}) + b"data: [DONE]\n\n"
    engine, backend = _engine(body)
    with pytest.raises(EngineError, match="CUDA out of memory"):
        await _deltas(engine, backend)


async def test_a_200_that_is_not_an_event_stream_is_an_unreadable_stream():
    engine, backend = _engine(
        json.dumps(_choice("Hi", finish="stop")).encode(), {"content-type": "text/html"}
    )
    with pytest.raises(EngineError, match="unreadable stream.*not an event stream"):
        await _deltas(engine, backend)
    assert backend.in_flight == 0
