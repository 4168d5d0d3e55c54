"""Internal token log-probabilities in OpenAI's two wire formats (chat and legacy completions)."""

from __future__ import annotations

from llmhost.types import TokenLogprob

from .responses import ChatLogprobs, ChatTokenLogprob, ChatTopLogprob, CompletionLogprobs


def _token_str(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def chat_logprobs(items: list[TokenLogprob] | None) -> ChatLogprobs | None:
    if items is None:
        return None
    return ChatLogprobs(
        content=[
            ChatTokenLogprob(
                token=_token_str(lp.token_bytes),
                logprob=lp.logprob,
                bytes=list(lp.token_bytes),
                top_logprobs=[
                    ChatTopLogprob(
                        token=_token_str(t.token_bytes), logprob=t.logprob, bytes=list(t.token_bytes)
                    )
                    for t in lp.top
                ],
            )
            for lp in items
        ]
    )


def completion_logprobs(items: list[TokenLogprob] | None, text_offset: int = 0) -> CompletionLogprobs | None:
    if items is None:
        return None
    tokens, token_logprobs, top_logprobs, offsets = [], [], [], []
    offset = text_offset
    for lp in items:
        token = _token_str(lp.token_bytes)
        tokens.append(token)
        token_logprobs.append(lp.logprob)
        top_logprobs.append({_token_str(t.token_bytes): t.logprob for t in lp.top} if lp.top else None)
        offsets.append(offset)
        offset += len(token)
    return CompletionLogprobs(
        tokens=tokens, token_logprobs=token_logprobs, top_logprobs=top_logprobs, text_offset=offsets
    )
