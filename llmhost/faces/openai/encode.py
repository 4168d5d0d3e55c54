"""Small pieces of the OpenAI response shapes shared by chat and completions."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from llmhost.types import Usage


def finish_reason(reason: Any) -> str | None:
    return None if reason is None else str(reason)


def usage(num_prompt: int, num_completion: int, num_cached: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": num_prompt,
        "completion_tokens": num_completion,
        "total_tokens": num_prompt + num_completion,
    }
    if num_cached is not None:  # as OpenAI and vLLM: prompt tokens served from the prefix cache
        out["prompt_tokens_details"] = {"cached_tokens": num_cached}
    return out


def cached_tokens(usages: Iterable[Usage | None], *, per_choice: bool) -> int | None:
    """`prompt_tokens_details.cached_tokens` of a request from its sequences' usages: summed where the
    request counts prompt tokens per choice (completions), else the least any choice found (chat counts
    the prompt once; the first choice may compute it and the others copy it). None when the engine
    does not say."""
    found = [u.cached_tokens for u in usages if u is not None and u.cached_tokens is not None]
    if not found:
        return None
    return sum(found) if per_choice else min(found)


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
