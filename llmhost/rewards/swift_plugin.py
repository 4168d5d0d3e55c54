"""The consistency reward as an ms-swift ORM plugin (`swift rlhf --rlhf_type grpo`).

    swift rlhf --rlhf_type grpo ... \\
        --external_plugins "$(python -c 'import llmhost.rewards.swift_plugin as m; print(m.__file__)')" \\
        --reward_funcs llmhost_consistency

ms-swift is not imported at module level: `ConsistencyORM` is duck-typed to its ORM protocol
(`__call__(completions, solution, **kwargs) -> list[float]`), so this module imports, and the class can
be used directly, without ms-swift installed. When `swift.plugin` imports, the class is registered in
its `orms` table as `llmhost_consistency`.

ms-swift builds ORMs without arguments of ours, so the judge is configured by environment variables:
`LLMHOST_REWARD_URL` (default http://127.0.0.1:8000), `LLMHOST_REWARD_MODEL`, `LLMHOST_REWARD_API_KEY`,
`LLMHOST_REWARD_ON_ERROR` ("raise", the default, or a number), `LLMHOST_REWARD_TIMEOUT_S`,
`LLMHOST_REWARD_MAX_RETRIES`, `LLMHOST_REWARD_MAX_CONCURRENCY`, `LLMHOST_REWARD_ROUTE` (chat|batch),
`LLMHOST_REWARD_SCORING` (letter|probability).
Keyword arguments to the constructor win over them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from llmhost.rewards.consistency import ConsistencyJudge, JudgeConfig

log = logging.getLogger("llmhost.rewards")

ORM_NAME = "llmhost_consistency"

_ENV: dict[str, tuple[str, type]] = {
    "url": ("LLMHOST_REWARD_URL", str),
    "model": ("LLMHOST_REWARD_MODEL", str),
    "api_key": ("LLMHOST_REWARD_API_KEY", str),
    "on_error": ("LLMHOST_REWARD_ON_ERROR", str),
    "timeout_s": ("LLMHOST_REWARD_TIMEOUT_S", float),
    "max_retries": ("LLMHOST_REWARD_MAX_RETRIES", int),
    "max_concurrency": ("LLMHOST_REWARD_MAX_CONCURRENCY", int),
    "route": ("LLMHOST_REWARD_ROUTE", str),
    "scoring": ("LLMHOST_REWARD_SCORING", str),
}


def config_from_env(environ: dict[str, str] | None = None, **overrides: Any) -> JudgeConfig:
    """A `JudgeConfig` from `LLMHOST_REWARD_*` variables, then `overrides`."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    for name, (var, kind) in _ENV.items():
        raw = environ.get(var)
        if raw is None or raw == "":
            continue
        try:
            values[name] = kind(raw)
        except ValueError as exc:
            raise ValueError(f"{var}={raw!r} is not a valid {kind.__name__}") from exc
    if "on_error" in values and values["on_error"] != "raise":
        try:
            values["on_error"] = float(values["on_error"])
        except ValueError as exc:
            raise ValueError(
                f"LLMHOST_REWARD_ON_ERROR must be 'raise' or a number, not {values['on_error']!r}"
            ) from exc
    values.update({k: v for k, v in overrides.items() if v is not None})
    return JudgeConfig(**values)


class ConsistencyORM:
    """ms-swift's ORM protocol around `ConsistencyJudge`.

    The question of each row comes from a `question` (or `query`, `problem`) dataset column, else from
    the last user turn of `messages` (the prompt ms-swift passes along)."""

    def __init__(self, **options: Any) -> None:
        self.judge = ConsistencyJudge(config_from_env(**options))

    def __call__(self, completions: Sequence[Any], solution: Sequence[str], **kwargs: Any) -> list[float]:
        questions = questions_from(kwargs, len(completions))
        return [v.reward for v in self.judge.score(completions, solution, questions)]


def questions_from(columns: dict[str, Any], num_rows: int) -> list[str]:
    for key in ("question", "questions", "query", "problem"):
        value = columns.get(key)
        if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == num_rows:
            return [str(q) for q in value]
    conversations = columns.get("messages")
    if isinstance(conversations, Sequence) and len(conversations) == num_rows:
        return [_last_user_text(c) for c in conversations]
    raise ValueError(
        "the consistency reward needs each row's question: give the dataset a 'question' column, or "
        f"pass 'messages' (got columns: {', '.join(sorted(columns)) or 'none'})"
    )


def _last_user_text(conversation: Any) -> str:
    for message in reversed(list(conversation or ())):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # multimodal parts: keep the text ones
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def register() -> bool:
    """Add `ConsistencyORM` to ms-swift's `orms` table; False when ms-swift is not installed."""
    try:
        from swift.plugin import orms  # type: ignore[import-not-found]
    except ImportError:
        return False
    orms[ORM_NAME] = ConsistencyORM
    log.debug("registered the ms-swift ORM '%s'", ORM_NAME)
    return True


register()
