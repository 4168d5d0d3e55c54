"""The prompts a benchmark sends: random text of about I tokens, or the lines of a JSONL file.

Random prompts are words drawn from a fixed list of common English words (most are one token in every
BPE vocabulary). How many tokens a word really costs is the server's tokenizer's business, so the load
generator can calibrate `tokens_per_word` from the server's usage before building the prompts; without
that a word counts as one token. A seeded generator makes two runs send the same prompts.

A JSONL line is `{"prompt": str}` (or `"question"`), or `{"messages": [{"role", "content"}, …]}`;
an optional `"max_tokens"` (or `"output_len"`) overrides `--output-len` for that line.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmhost.jsonl import read_jsonl

# Short, frequent words: each is a single token for the common BPE vocabularies (GPT-2, Llama, Qwen).
WORDS = (
    "the of and to in is was for on that with as by at from his her they this had not are but be "
    "which have one you were all she there would their we him been has when who will more no if out "
    "so said what up its about into than them can only other new some could time these two may then do "
    "first any my now such like our over man me even most made after also did many before must through "
    "back years where much your way well down should because each just those people how too little state "
    "good very make world still own see men work long get here between both life being under never day "
    "same another know while last might us great old year off come since against go came right used take "
    "three house small water city light river green stone paper music table window garden market story"
).split()


class WorkloadError(ValueError):
    """The dataset cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Prompt:
    """One request's input: a plain `text` (sent as one user turn, or as the completion prompt) or a
    full `messages` list; `max_tokens` overrides the run's output length when set."""

    text: str | None = None
    messages: list[dict[str, Any]] | None = None
    max_tokens: int | None = None
    # The server's prompt tokens as calibrated (random prompts only): used when its stream reports none.
    num_tokens_estimate: int | None = None

    def chat_messages(self) -> list[dict[str, Any]]:
        return self.messages if self.messages is not None else [{"role": "user", "content": self.text}]

    def completion_prompt(self) -> str:
        if self.text is not None:
            return self.text
        # A chat line sent to /v1/completions: its contents, one per paragraph (no template to apply).
        return "\n\n".join(str(m.get("content") or "") for m in self.messages or ())


def random_text(num_words: int, rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(max(1, num_words)))


def random_prompts(
    num_prompts: int,
    input_len: int,
    *,
    seed: int = 0,
    tokens_per_word: float = 1.0,
    fixed_tokens: float | None = None,
) -> list[Prompt]:
    """`num_prompts` prompts of about `input_len` tokens each (`input_len / tokens_per_word` words).
    With `fixed_tokens` (what the server adds to any prompt: the chat template) each prompt also
    carries the number of prompt tokens the server should count for it."""
    rng = random.Random(seed)
    num_words = max(1, round(input_len / max(tokens_per_word, 1e-6)))
    estimate = None if fixed_tokens is None else round(fixed_tokens + tokens_per_word * num_words)
    return [
        Prompt(text=random_text(num_words, rng), num_tokens_estimate=estimate) for _ in range(num_prompts)
    ]


def _max_tokens(obj: dict[str, Any], where: str) -> int | None:
    for key in ("max_tokens", "output_len"):
        if key in obj:
            value = obj[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise WorkloadError(f"{where}: {key!r} must be a positive integer")
            return value
    return None


def _prompt(obj: Any, where: str) -> Prompt:
    if not isinstance(obj, dict):
        raise WorkloadError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    max_tokens = _max_tokens(obj, where)
    if "messages" in obj:
        messages = obj["messages"]
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
        ):
            raise WorkloadError(
                f"{where}: 'messages' must be a non-empty list of {{'role', 'content'}} objects"
            )
        return Prompt(messages=messages, max_tokens=max_tokens)
    for key in ("prompt", "question"):
        if key in obj:
            if not isinstance(obj[key], str) or not obj[key]:
                raise WorkloadError(f"{where}: {key!r} must be a non-empty string")
            return Prompt(text=obj[key], max_tokens=max_tokens)
    raise WorkloadError(f"{where}: needs 'prompt', 'question' or 'messages'")


def load_prompts(path: str | Path) -> list[Prompt]:
    """Every prompt in a JSONL file, in order; blank lines skipped, any other bad line named."""
    prompts = [_prompt(obj, where) for _, where, obj in read_jsonl(path, WorkloadError)]
    if not prompts:
        raise WorkloadError(f"{path}: no prompts")
    return prompts


def take(prompts: list[Prompt], num_prompts: int) -> list[Prompt]:
    """The first `num_prompts` prompts, cycling through the list when it is shorter."""
    return [prompts[i % len(prompts)] for i in range(num_prompts)]
