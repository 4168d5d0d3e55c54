"""Where the code agent loop sends an action: the built-in sandbox or a remote verl-tool tool server.

Both speak the `/get_observation` semantics (CONTRACTS.md §5): one action (the model text of one turn)
in, one wrapped observation out, with the same trajectory id on every turn and `finish` at the end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from llmhost.errors import SandboxBusy, SandboxUnavailable
from llmhost.tools.observation import ObservationService, extract_code, format_output, wrap_observation
from llmhost.tools.sandbox import ExecutionResult

log = logging.getLogger("llmhost.tools")


@dataclass(frozen=True)
class ToolReply:
    """What one action produced. `observation` is already wrapped (`<result>…</result>` or a fenced
    `output` block); it is empty when the action held no code (`is_valid` False)."""

    observation: str
    is_valid: bool
    result: dict[str, Any] | None = None  # the sandbox's ExecutionResult as a dict, when something ran


class ToolBackend(Protocol):
    async def observe(self, trajectory_id: str, action: str) -> ToolReply: ...

    async def finish(self, trajectory_id: str) -> None: ...


def _wrap_for(action: str, result: ExecutionResult, style: str) -> str:
    """The observation wrapped to match the action. An action that ends by *opening* the output fence
    (ToRL's "```output" stop token) gets the text and the closing fence only, as verl-tool does."""
    if action.rstrip().endswith("```output"):
        text = format_output(result)
        return f"\n{text}{'' if text.endswith(chr(10)) or not text else chr(10)}```\n"
    return wrap_observation(format_output(result), style)


@dataclass
class LocalTools:
    """The built-in sandbox, through the same `ObservationService` that serves `/get_observation`
    (so the loop and the tool face share one execution semaphore and queue)."""

    service: ObservationService

    async def observe(self, trajectory_id: str, action: str) -> ToolReply:
        parsed = extract_code(action)
        if parsed is None:
            return ToolReply("", is_valid=False)
        [entry] = await self.service.observe([trajectory_id], [action])
        if entry.result is None:  # cannot happen for an action with code; kept defensive
            return ToolReply("", is_valid=False)
        return ToolReply(_wrap_for(action, entry.result, parsed.style), True, entry.result.to_dict())

    async def finish(self, trajectory_id: str) -> None:
        await self.service.observe([trajectory_id], [""], [True])


@dataclass
class RemoteTools:
    """A verl-tool-compatible tool server (`POST URL` with the batched `/get_observation` body)."""

    url: str
    client: httpx.AsyncClient
    timeout_s: float = 120.0
    extra: dict[str, Any] = field(default_factory=dict)

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self.client.post(self.url, json=body, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise SandboxUnavailable(f"the tool server at {self.url} failed: {type(exc).__name__}") from exc
        if response.status_code == 429:
            raise SandboxBusy(f"the tool server at {self.url} is busy (429)")
        if response.status_code != 200:
            raise SandboxUnavailable(f"the tool server at {self.url} answered {response.status_code}")
        try:
            data = response.json()
            return data if isinstance(data, dict) else {}
        except ValueError as exc:
            raise SandboxUnavailable(f"the tool server at {self.url} answered something not JSON") from exc

    async def observe(self, trajectory_id: str, action: str) -> ToolReply:
        data = await self._post({"trajectory_ids": [trajectory_id], "actions": [action], "finish": [False]})
        try:
            obs, is_valid = data["observations"][0], bool(data["valids"][0])
        except (KeyError, IndexError, TypeError) as exc:
            raise SandboxUnavailable(f"the tool server at {self.url} answered an unexpected shape") from exc
        if isinstance(obs, dict):  # verl-tool's {"obs": …, "invalid_reason": …} form
            obs = obs.get("obs", "")
        results = data.get("results")  # llmhost's own extension, absent from verl-tool servers
        result = results[0] if isinstance(results, list) and results else None
        return ToolReply(str(obs or ""), is_valid, result if isinstance(result, dict) else None)

    async def finish(self, trajectory_id: str) -> None:
        try:
            await self._post({"trajectory_ids": [trajectory_id], "actions": [""], "finish": [True]})
        except (SandboxUnavailable, SandboxBusy) as exc:  # state on the far side leaks; the answer stands
            log.warning("could not finish trajectory %s: %s", trajectory_id, exc.message)
