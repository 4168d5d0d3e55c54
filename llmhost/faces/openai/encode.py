"""Small pieces of the OpenAI response shapes shared by chat and completions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llmhost.types import Usage


def finish_reason(reason: Any) -> str | None:
    return None if reason is None else str(reason)


def usage(totals: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": totals.prompt_tokens,
        "completion_tokens": totals.completion_tokens,
        "total_tokens": totals.total_tokens,
    }
    if totals.cached_tokens is not None:  # as OpenAI and vLLM: prompt tokens served from the prefix cache
        out["prompt_tokens_details"] = {"cached_tokens": totals.cached_tokens}
    return out


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
