"""The wire side of llmhost's Python clients: errors, the server's error message whatever the face's
error shape, answer and stream-event parsing (also used by `llmhost bench`). SSE decoding itself is in
`llmhost.client.sse`."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import httpx

from llmhost.client.sse import is_done

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


def _event(data: str) -> dict[str, Any] | None:
    """The decoded event, or None for the OpenAI stream's closing `[DONE]`."""
    if is_done(data):
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
    _http_class: Any  # httpx.Client or httpx.AsyncClient

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
        # The subclass says which httpx client it drives (blocking or asyncio).
        self._http = self._http_class(base_url=self.base_url, headers=self._headers, timeout=self._timeout)

    def _transport_error(self, exc: httpx.TransportError) -> LlmhostConnectionError:
        if isinstance(exc, httpx.TimeoutException):
            return LlmhostTimeoutError(f"llmhost at {self.base_url} did not answer in time ({exc!r})")
        return LlmhostConnectionError(f"cannot reach llmhost at {self.base_url}: {exc}")
