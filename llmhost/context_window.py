"""The one context-fit check: does a prompt, with room for its completion, fit the model's context?

Every path asks it here (engines before queueing, the generation pipeline before admission, the code
loop before each turn), so a client always reads the same sentence, worded as OpenAI words it: clients
and harnesses parse "maximum context length is N tokens". A batch names every prompt that does not fit.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmhost.errors import ContextLengthExceeded

_SHOWN = 10  # prompts named in a batch error; the rest are counted


def completion_room(num_prompt_tokens: int, max_model_len: int) -> int:
    """Tokens the context leaves for the completion after the prompt (may be 0 or less)."""
    return max_model_len - num_prompt_tokens


def ensure_fits(
    num_prompt_tokens: Sequence[int],
    max_tokens: Sequence[int | None],
    max_model_len: int,
    *,
    param: str = "messages",
    batch_noun: str | None = None,
    is_lower_bound: bool = False,
    indices: Sequence[int] | None = None,
) -> None:
    """Raise `ContextLengthExceeded` unless every prompt leaves room for its `max_tokens` (None: at
    least one token). With `batch_noun` ("prompt", "item") the error names each failing index that way
    (`/predict`, a rewards batch); without it, one prompt is described as OpenAI does. `is_lower_bound`:
    the prompt lengths are the least the prompts can have (counted from their characters, not tokenized).
    `indices`: the index to name for each prompt, when they are a subset of what the client sent."""
    asked = [1 if m is None else m for m in max_tokens]
    failing = [
        i for i, (p, m) in enumerate(zip(num_prompt_tokens, asked, strict=True)) if p + m > max_model_len
    ]
    if not failing:
        return
    head = f"This model's maximum context length is {max_model_len} tokens. However, "
    at_least = "at least " if is_lower_bound else ""
    if batch_noun is None:
        p, m = num_prompt_tokens[failing[0]], asked[failing[0]]
        raise ContextLengthExceeded(
            f"{head}you requested {at_least}{p + m} tokens ({p} in the prompt, {m} for the completion). "
            "Please reduce the prompt or the completion length.",
            param=param,
        )
    named = indices if indices is not None else range(len(num_prompt_tokens))
    shown = ", ".join(f"{named[i]} ({at_least}{num_prompt_tokens[i]} tokens)" for i in failing[:_SHOWN])
    more = f" and {len(failing) - _SHOWN} more" if len(failing) > _SHOWN else ""
    raise ContextLengthExceeded(
        f"{head}{batch_noun}(s) {shown}{more} do not fit with room for a {max(asked)}-token completion. "
        "Shorten them or the completion, or serve with a larger --max-model-len.",
        param=param,
    )
