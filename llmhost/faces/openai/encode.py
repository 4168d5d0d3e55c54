"""Small pieces of the OpenAI response shapes shared by chat and completions."""

from __future__ import annotations

from typing import Any


def finish_reason(reason: Any) -> str | None:
    return None if reason is None else str(reason)


def usage(num_prompt: int, num_completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": num_prompt,
        "completion_tokens": num_completion,
        "total_tokens": num_prompt + num_completion,
    }
