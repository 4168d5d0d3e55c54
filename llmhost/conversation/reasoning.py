"""Thinking text (`<think>…</think>`, Qwen3 and DeepSeek-R1 style) in model output."""

from __future__ import annotations

import re

THINK_START = "<think>"
THINK_END = "</think>"

_THINK_BLOCK = re.compile(r"<think>.*?</think>\s*", re.DOTALL)


def strip_thinking(text: str) -> str:
    """The answer without its thinking.

    Closed `<think>…</think>` blocks are removed. A `</think>` without an opening tag (the template
    opened the block in the prompt) drops everything before it. An unclosed `<think>` (cut by
    max_tokens) drops everything from it. When nothing is left, the thinking is returned instead, so a
    caller never gets an empty answer for a model that only thought (seed 003 did the same).
    """
    answer = _THINK_BLOCK.sub("", text)
    if THINK_END in answer:
        answer = answer.split(THINK_END, 1)[1]
    if THINK_START in answer:
        answer = answer.split(THINK_START, 1)[0]
    answer = answer.strip()
    if answer:
        return answer
    return text.replace(THINK_START, "").replace(THINK_END, "").strip()
