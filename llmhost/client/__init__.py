"""Python clients for a running llmhost server: `Client` (blocking) and `AsyncClient` (asyncio).

    from llmhost.client import Client

    with Client("http://127.0.0.1:8000") as llm:
        llm.predict(["What is CUDA?", "What is a warp?"])     # seed 003's evaluation API
        llm.chat("Hello!", history=[...])                     # seed 002's simple chat API
        for event in llm.chat_stream("Tell me a story"):      # {"type": "chunk", "content": "..."}
            ...

Every failure is a `LlmhostClientError`: `LlmhostConnectionError` when the server cannot be reached
(`LlmhostTimeoutError` when it does not answer in time), `LlmhostHTTPError` when it answers with an
error, carrying the status and the server's message whatever the error shape of the route (OpenAI's
`{"error": {"message"}}`, the predict face's `{"detail"}`, the simple API's `{"error": str}`), and
`LlmhostStreamError` when a stream that had started reports an error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import httpx

from llmhost.client.sse import NotAnEventStream, aiter_sse_data, iter_sse_data
from llmhost.client.wire import (
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT_S,
    LlmhostClientError,
    LlmhostConnectionError,
    LlmhostHTTPError,
    LlmhostStreamError,
    LlmhostTimeoutError,
    Message,
    _Base,
    _chat_answer,
    _chat_body,
    _chunk,
    _event,
    _health,
    _json,
    _predict_answer,
    _raise_for_status,
    server_message,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT_S",
    "AsyncClient",
    "Client",
    "LlmhostClientError",
    "LlmhostConnectionError",
    "LlmhostHTTPError",
    "LlmhostStreamError",
    "LlmhostTimeoutError",
    "server_message",
]


# -- blocking client -------------------------------------------------------------------------------
class Client(_Base):
    """Blocking client. Use as a context manager, or call `close()`."""

    _http: httpx.Client
    _http_class = httpx.Client

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc

    def _stream(self, path: str, body: dict[str, Any]) -> Iterator[str]:
        """The `data` payloads of an SSE response; an error status is raised before any."""
        try:
            with self._http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_status(response)
                try:
                    yield from iter_sse_data(response)
                except NotAnEventStream as exc:
                    raise LlmhostHTTPError(response.status_code, str(exc)) from None
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc

    # predict face (seed 003)
    def predict(self, prompt: str | list[str], **opts: Any) -> str | list[str]:
        """One answer for a string, a list of answers (same order) for a list of prompts. `opts`:
        max_new_tokens, temperature, top_p, top_k, repetition_penalty, frequency_penalty."""
        return _predict_answer(prompt, self._request("POST", "/predict", json={"prompt": prompt, **opts}))

    # simple chat API (seed 002)
    def chat(self, message: str, history: Iterable[Message] | None = None, **opts: Any) -> str:
        """The answer to `message` after `history` (`[{"role", "content"}, …]`)."""
        return _chat_answer(self._request("POST", "/api/v1/chat", json=_chat_body(message, history, opts)))

    def chat_stream(
        self, message: str, history: Iterable[Message] | None = None, **opts: Any
    ) -> Iterator[dict[str, Any]]:
        """The events of `/api/v1/chat/stream` as dicts: `{"type": "start"|"thinking"|"chunk"|"end"|
        "error", "content": str}` (an `error` event is yielded, not raised)."""
        for data in self._stream("/api/v1/chat/stream", _chat_body(message, history, opts)):
            event = _event(data)
            if event is not None:
                yield event

    def model_info(self) -> dict[str, Any]:
        return _json(self._request("GET", "/api/v1/model/info"))

    def load_model(self) -> dict[str, Any]:
        return _json(self._request("POST", "/api/v1/model/load"))

    # operations and the OpenAI face
    def health(self) -> dict[str, Any]:
        """`GET /health`: `{"status": "healthy", "model_loaded": true, …}`; while the model is not loaded
        the server's 503 body (`model_loaded: false`) is returned, not raised."""
        return _health(self._request("GET", "/health"))

    def wait_until_ready(self, timeout_s: float = 120.0, interval_s: float = 0.5) -> dict[str, Any]:
        """Poll `/health` until the model is loaded; `LlmhostTimeoutError` after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                status = self.health()
                if status.get("model_loaded"):
                    return status
            except LlmhostConnectionError:
                pass
            if time.monotonic() >= deadline:
                raise LlmhostTimeoutError(f"llmhost at {self.base_url} not ready within {timeout_s:g}s")
            time.sleep(interval_s)

    def models(self) -> list[str]:
        """The served model names (`GET /v1/models`), first the one reported in answers."""
        return [m["id"] for m in _json(self._request("GET", "/v1/models"))["data"]]

    def chat_completion(self, messages: list[Message], **opts: Any) -> dict[str, Any]:
        """`POST /v1/chat/completions` (not streamed): the response body."""
        return _json(self._request("POST", "/v1/chat/completions", json={"messages": messages, **opts}))

    def chat_completion_stream(self, messages: list[Message], **opts: Any) -> Iterator[dict[str, Any]]:
        """`POST /v1/chat/completions` with `stream: true`: the chunk dicts, usage chunk included."""
        body = {"messages": messages, **opts, "stream": True}
        body.setdefault("stream_options", {"include_usage": True})
        for data in self._stream("/v1/chat/completions", body):
            chunk = _chunk(data)
            if chunk is None:
                return
            yield chunk


# -- asyncio client --------------------------------------------------------------------------------
class AsyncClient(_Base):
    """The same methods as `Client`, as coroutines and async iterators."""

    _http: httpx.AsyncClient
    _http_class = httpx.AsyncClient

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc

    async def _stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[str]:
        try:
            async with self._http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for_status(response)
                try:
                    async for data in aiter_sse_data(response):
                        yield data
                except NotAnEventStream as exc:
                    raise LlmhostHTTPError(response.status_code, str(exc)) from None
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc

    async def predict(self, prompt: str | list[str], **opts: Any) -> str | list[str]:
        response = await self._request("POST", "/predict", json={"prompt": prompt, **opts})
        return _predict_answer(prompt, response)

    async def chat(self, message: str, history: Iterable[Message] | None = None, **opts: Any) -> str:
        response = await self._request("POST", "/api/v1/chat", json=_chat_body(message, history, opts))
        return _chat_answer(response)

    async def chat_stream(
        self, message: str, history: Iterable[Message] | None = None, **opts: Any
    ) -> AsyncIterator[dict[str, Any]]:
        async for data in self._stream("/api/v1/chat/stream", _chat_body(message, history, opts)):
            event = _event(data)
            if event is not None:
                yield event

    async def model_info(self) -> dict[str, Any]:
        return _json(await self._request("GET", "/api/v1/model/info"))

    async def load_model(self) -> dict[str, Any]:
        return _json(await self._request("POST", "/api/v1/model/load"))

    async def health(self) -> dict[str, Any]:
        return _health(await self._request("GET", "/health"))

    async def wait_until_ready(self, timeout_s: float = 120.0, interval_s: float = 0.5) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                status = await self.health()
                if status.get("model_loaded"):
                    return status
            except LlmhostConnectionError:
                pass
            if time.monotonic() >= deadline:
                raise LlmhostTimeoutError(f"llmhost at {self.base_url} not ready within {timeout_s:g}s")
            await asyncio.sleep(interval_s)

    async def models(self) -> list[str]:
        return [m["id"] for m in _json(await self._request("GET", "/v1/models"))["data"]]

    async def chat_completion(self, messages: list[Message], **opts: Any) -> dict[str, Any]:
        body = {"messages": messages, **opts}
        return _json(await self._request("POST", "/v1/chat/completions", json=body))

    async def chat_completion_stream(
        self, messages: list[Message], **opts: Any
    ) -> AsyncIterator[dict[str, Any]]:
        body = {"messages": messages, **opts, "stream": True}
        body.setdefault("stream_options", {"include_usage": True})
        async for data in self._stream("/v1/chat/completions", body):
            chunk = _chunk(data)
            if chunk is None:
                return
            yield chunk
