"""Small pieces of the OpenAI response shapes shared by chat, completions and the code loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .responses import (
    ChatChunkChoice,
    ChatCompletionChunk,
    CompletionChunk,
    CompletionChunkChoice,
    CompletionUsage,
)


def finish_reason(reason: Any) -> str | None:
    return None if reason is None else str(reason)


@dataclass(frozen=True)
class ChunkEncoder:
    """Encodes the `data:` payload of one streamed chunk; the envelope is the same for every chunk."""

    chunk: type[ChatCompletionChunk] | type[CompletionChunk]  # or a subclass (the code loop's)
    request_id: str
    object: str  # "chat.completion.chunk" or "text_completion"
    created: int
    model: str

    def __call__(
        self,
        choices: list[ChatChunkChoice] | list[CompletionChunkChoice],
        usage: CompletionUsage | None = None,
        **extensions: Any,
    ) -> str:
        """One chunk; `extensions` are top-level fields of some chunks only (`prompt_token_ids`)."""
        extra = {} if usage is None else {"usage": usage}  # only the last chunk has `usage`
        extra.update(extensions)
        chunk = self.chunk(
            id=self.request_id,
            object=self.object,
            created=self.created,
            model=self.model,
            choices=choices,
            **extra,
        )
        return chunk.sse_data()
