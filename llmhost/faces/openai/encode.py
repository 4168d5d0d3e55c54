"""Small pieces of the OpenAI response shapes shared by chat and completions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


def finish_reason(reason: Any) -> str | None:
    return None if reason is None else str(reason)


def usage(num_prompt: int, num_completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": num_prompt,
        "completion_tokens": num_completion,
        "total_tokens": num_prompt + num_completion,
    }


@dataclass(frozen=True)
class ChunkEncoder:
    """Encodes the `data:` payload of one streamed chunk; the envelope is the same for every chunk."""

    request_id: str
    object: str  # "chat.completion.chunk" or "text_completion"
    created: int
    model: str

    def __call__(self, choices: list[dict[str, Any]], totals: dict[str, int] | None = None) -> str:
        out: dict[str, Any] = {
            "id": self.request_id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if totals is not None:
            out["usage"] = totals
        return json.dumps(out, ensure_ascii=False)
