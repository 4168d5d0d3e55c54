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
import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import httpx

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 600.0  # a whole /predict batch is one request; a short default would cut it


class LlmhostClientError(Exception):
    """Base of every error the clients raise."""


class LlmhostConnectionError(LlmhostClientError):
    """The server could not be reached (refused, reset, DNS, …)."""


class LlmhostTimeoutError(LlmhostConnectionError):
    """The server did not answer within the client's timeout."""


class LlmhostHTTPError(LlmhostClientError):
    """The server answered with an error status (or the simple API's `success: false`)."""

    def __init__(self, status_code: int, message: str, body: Any = None) -> None:
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.body = body


class LlmhostStreamError(LlmhostClientError):
    """A stream that had started (HTTP 200) ended with an error event."""

    def __init__(self, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.body = body


Message = dict[str, Any]


# -- wire helpers shared by both clients -----------------------------------------------------------
def server_message(body: Any, fallback: str) -> str:
    """The human-readable message in an error body, whichever face's shape it has."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str) and error:
            return error
        detail = body.get("detail")
        if isinstance(detail, str) and detail:
            return detail
        if isinstance(detail, list) and detail:  # FastAPI's validation list
            return "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
        if body.get("message"):
            return str(body["message"])
    return fallback


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    body = _json_or_none(response)
    fallback = response.text.strip() or response.reason_phrase
    raise LlmhostHTTPError(response.status_code, server_message(body, fallback), body)


def _json(response: httpx.Response) -> Any:
    _raise_for_status(response)
    body = _json_or_none(response)
    if body is None:
        raise LlmhostHTTPError(response.status_code, "the server's answer is not JSON", response.text)
    return body


def _chat_body(message: str, history: Iterable[Message] | None, opts: dict[str, Any]) -> dict[str, Any]:
    return {"message": message, "history": list(history or ()), **opts}


def _chat_answer(response: httpx.Response) -> str:
    body = _json(response)
    if body.get("success") is False:  # the original seed-002 server answered errors with a 200
        raise LlmhostHTTPError(response.status_code, server_message(body, "the chat failed"), body)
    return body["response"]


def _predict_answer(prompt: str | list[str], response: httpx.Response) -> str | list[str]:
    answer = _json(response)["response"]
    if isinstance(prompt, list) and (not isinstance(answer, list) or len(answer) != len(prompt)):
        count = len(answer) if isinstance(answer, list) else "not a list"
        raise LlmhostHTTPError(response.status_code, f"sent {len(prompt)} prompts, got {count} answers")
    return answer


def _health(response: httpx.Response) -> dict[str, Any]:
    if response.status_code == 503:  # "not loaded (yet)" is an answer, not an error
        body = _json_or_none(response)
        if isinstance(body, dict):
            return body
    return _json(response)


class SSEDecoder:
    """Server-sent events to their `data` payloads (multi-line data joined; comments and pings skipped)."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        line = line.rstrip("\r")
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if field == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def flush(self) -> str | None:
        if not self._data:
            return None
        data, self._data = "\n".join(self._data), []
        return data


def _event(data: str) -> dict[str, Any] | None:
    """The decoded event, or None for the OpenAI stream's closing `[DONE]`."""
    if data.strip() == "[DONE]":
        return None
    try:
        return json.loads(data)
    except ValueError as exc:
        raise LlmhostStreamError(f"the server sent an event that is not JSON: {data[:200]!r}") from exc


def _chunk(data: str) -> dict[str, Any] | None:
    chunk = _event(data)
    if chunk is not None and "error" in chunk and "choices" not in chunk:
        raise LlmhostStreamError(server_message(chunk, "the stream failed"), chunk)
    return chunk


class _Base:
    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        api_key: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(timeout, connect=min(timeout or 10.0, 10.0))

    def _transport_error(self, exc: httpx.TransportError) -> LlmhostConnectionError:
        if isinstance(exc, httpx.TimeoutException):
            return LlmhostTimeoutError(f"llmhost at {self.base_url} did not answer in time ({exc!r})")
        return LlmhostConnectionError(f"cannot reach llmhost at {self.base_url}: {exc}")


# -- blocking client -------------------------------------------------------------------------------
class Client(_Base):
    """Blocking client. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        api_key: str | None = None,
    ) -> None:
        super().__init__(base_url, timeout=timeout, api_key=api_key)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=self._timeout)

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
                decoder = SSEDecoder()
                for line in response.iter_lines():
                    data = decoder.feed(line)
                    if data is not None:
                        yield data
                data = decoder.flush()
                if data is not None:
                    yield data
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

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        api_key: str | None = None,
    ) -> None:
        super().__init__(base_url, timeout=timeout, api_key=api_key)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=self._timeout)

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
                decoder = SSEDecoder()
                async for line in response.aiter_lines():
                    data = decoder.feed(line)
                    if data is not None:
                        yield data
                data = decoder.flush()
                if data is not None:
                    yield data
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
