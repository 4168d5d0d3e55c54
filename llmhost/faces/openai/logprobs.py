"""Internal token log-probabilities in OpenAI's two wire formats (chat and legacy completions)."""

from __future__ import annotations

from llmhost.types import TokenLogprob

from .responses import (
    ChatLogprobs,
    ChatTokenLogprob,
    ChatTopLogprob,
    CompletionLogprobs,
    PromptLogprob,
    PromptLogprobs,
)


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


def completion_logprobs(
    items: list[TokenLogprob] | None,
    text_offset: int = 0,
    *,
    prompt: list[TokenLogprob | None] | None = None,
    first_token: str = "",
) -> CompletionLogprobs | None:
    """The legacy shape of generated tokens, after those of an echoed `prompt` (whose first entry is
    None: its token, `first_token`, gets a null logprob, as in vLLM and OpenAI)."""
    if items is None and prompt is None:
        return None
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] = []
    offsets: list[int] = []
    offset = text_offset
    for lp in [*(prompt or ()), *(items or ())]:
        token = first_token if lp is None else _token_str(lp.token_bytes)
        tokens.append(token)
        token_logprobs.append(None if lp is None else _finite(lp.logprob))
        top_logprobs.append(
            {_token_str(t.token_bytes): _finite(t.logprob) for t in lp.top}
            if lp is not None and lp.top
            else None
        )
        offsets.append(offset)
        offset += len(token)
    return CompletionLogprobs(
        tokens=tokens, token_logprobs=token_logprobs, top_logprobs=top_logprobs, text_offset=offsets
    )


def prompt_logprobs_wire(items: list[TokenLogprob | None]) -> PromptLogprobs:
    """vLLM's `prompt_logprobs`: per position null (the first) or {token id: {logprob, rank,
    decoded_token}}, the prompt's own token first, then the most likely tokens not already named."""
    out: PromptLogprobs = []
    for lp in items:
        if lp is None:
            out.append(None)
            continue
        entry = {str(lp.token_id): _prompt_logprob(lp.token_bytes, lp.logprob, lp.rank)}
        for rank, t in enumerate(lp.top, start=1):
            entry.setdefault(str(t.token_id), _prompt_logprob(t.token_bytes, t.logprob, rank))
        out.append(entry)
    return out


def _prompt_logprob(raw: bytes, logprob: float, rank: int | None) -> PromptLogprob:
    return PromptLogprob(logprob=_finite(logprob), rank=rank, decoded_token=_token_str(raw))


def _finite(logprob: float) -> float:
    # JSON has no -Infinity: a token the model rules out entirely is written as vLLM writes it.
    return max(logprob, -9999.0)
