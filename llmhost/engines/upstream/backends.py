"""What an upstream engine sends requests to: a server llmhost attached to, or (`supervisor.py`) one it
launched. Both expose the same few attributes the engine and the router read."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import httpx

from llmhost.errors import ModelLoadError


class Backend(Protocol):
    """One server requests can go to (an attached URL or a `Supervisor`)."""

    label: str
    base_url: str | None  # None while it cannot take requests
    down_reason: str | None
    in_flight: int
    restarts: int
    listeners: list

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class AttachedBackend:
    """A server llmhost did not start: it only checks that it answers."""

    def __init__(self, url: str, headers: dict[str, str], *, timeout_s: float = 30.0) -> None:
        url = url.rstrip("/")
        self.url = url[:-3] if url.endswith("/v1") else url
        self.label = f"upstream {self.url}"
        self.base_url: str | None = None
        self.down_reason: str | None = "not started"
        self.in_flight = 0
        self.restarts = 0
        self.listeners: list = []
        self.models: list[dict[str, Any]] = []
        self._headers = headers
        self._timeout_s = timeout_s

    async def start(self) -> None:
        deadline = time.monotonic() + self._timeout_s
        last = ""
        async with httpx.AsyncClient(timeout=5.0, headers=self._headers) as client:
            while time.monotonic() < deadline:
                try:
                    resp = await client.get(self.url + "/v1/models")
                    if resp.status_code in (401, 403):
                        raise ModelLoadError(f"{self.label} refused --engine-api-key ({resp.status_code})")
                    if resp.status_code == 200:
                        self.models = list(resp.json().get("data") or [])
                        self.base_url, self.down_reason = self.url, None
                        return
                    last = f"GET /v1/models answered {resp.status_code}"
                except (httpx.HTTPError, ValueError) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(0.5)
        raise ModelLoadError(f"{self.label} did not answer within {self._timeout_s:g}s ({last})")

    async def close(self) -> None:
        self.base_url, self.down_reason = None, "closed"
