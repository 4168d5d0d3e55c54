"""The settings of code tools: the sandbox that runs model-written code (`/get_observation`, the code
agent loop) and the agent loop on `/v1/chat/completions` (README "Code tools"). Part of `Settings`
(config.py): each is a flag, an environment variable and a YAML key."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode


def split_names(value: Any) -> Any:
    """A list setting from a flag or variable: a JSON list, or names separated by commas (repeated flags
    give a list of such strings)."""
    if isinstance(value, str):
        value = json.loads(value) if value.lstrip().startswith("[") else [value]
    if isinstance(value, list | tuple):
        return [n.strip() for v in value for n in str(v).split(",") if n.strip()]
    return value


class ToolSettings(BaseModel):
    sandbox: Literal["auto", "bwrap", "rlimits", "off"] = Field(
        "auto",
        description="Isolation for code tools (/get_observation). auto/bwrap: bubblewrap namespaces, and "
        "refuse to run code when they do not work here; rlimits: resource limits only (code can read "
        "this host's files and reach its network); off: no isolation (trusted code only).",
    )
    sandbox_timeout_s: float = Field(
        10.0, gt=0, le=3600, description="Wall-clock seconds one code execution may run before it is killed."
    )
    sandbox_max_output_bytes: int = Field(
        64 * 1024, ge=1, description="Bytes of stdout+stderr kept per execution; past that it is killed."
    )
    sandbox_max_concurrency: int = Field(
        4, ge=1, le=1024, description="Code executions that run at the same time; more wait in the queue."
    )
    sandbox_max_queue: int = Field(
        1024, ge=0, description="Code executions that may wait for a slot; past that the call answers busy."
    )

    # -- the code agent loop on /v1/chat/completions (README "Code tools") ------------------------------
    code_tools: bool = Field(
        False,
        description="Chat completions run the code agent loop: generation stops at an action stop token, "
        "the code runs (built-in sandbox or --tool-server-url), its output is appended, generation goes on. "
        "A request can turn it on or off with `code_tools` in its body.",
    )
    max_turns: int = Field(5, ge=0, le=100, description="Code agent loop: most tool turns (0: no tools).")
    min_turns: int = Field(
        0,
        ge=0,
        le=100,
        description="Code agent loop: for this many first turns, code is extracted and run even when the "
        "model stopped on its own.",
    )
    action_stop_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["</python>"],
        description="Code agent loop: stop strings that end an action (repeat or comma-separate).",
    )
    tool_server_url: str | None = Field(
        None,
        description="Code agent loop: a verl-tool-compatible tool server (e.g. "
        "http://127.0.0.1:30150/get_observation) instead of the built-in sandbox.",
    )
    allow_request_tool_server_url: bool = Field(
        False,
        description="Let a request name its own `tool_server_url` (off by default: the server would POST "
        "model text to any address a client names).",
    )
    max_obs_length: int | None = Field(
        512,
        ge=1,
        description="Code agent loop: tokens kept per observation (head and tail, with a marker between).",
    )

    @field_validator("action_stop_tokens", mode="before")
    @classmethod
    def _split_stop_tokens(cls, value: Any) -> Any:
        return split_names(value)
