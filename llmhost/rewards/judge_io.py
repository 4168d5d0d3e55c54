"""What the consistency judge needs around its HTTP calls: reading a failed answer, and running the
async judge from synchronous trainer code (a reward function is called synchronously)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import httpx


def error_message(response: httpx.Response) -> str:
    """What a judge server said went wrong: OpenAI's error message, FastAPI's detail, or the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("error", "detail", "message"):
            if isinstance(body.get(key), str):
                return body[key]
    return str(body)[:200]


def retry_after_s(response: httpx.Response) -> float | None:
    """A 429/503's Retry-After in seconds, if it gave one."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


def completion_text(completion: Any) -> str:
    """A completion as text: a string, or (TRL's conversational form) a list of messages whose last
    one holds the text."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    raise TypeError(f"a completion must be a string or a list of messages, not {type(completion).__name__}")


def run_sync(coro: Any) -> Any:
    """Run a coroutine to its end from synchronous code, even when this thread already runs an event
    loop (a notebook, an async trainer): then it runs on a short-lived thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="llmhost-reward")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]
