"""Internal types shared by every layer: plain dataclasses, no HTTP and no engine imports."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from llmhost.errors import InvalidRequest

MAX_TOP_LOGPROBS = 20


class FinishReason(StrEnum):
    STOP = "stop"  # end-of-generation token or a stop string
    LENGTH = "length"  # max_tokens or the context was reached
    ABORT = "abort"  # cancelled (client went away, shutdown)


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence is sampled. Validated here so every face gets the same rules."""

    # None: until end-of-generation or the context is full; 0: the prompt only (no token is generated),
    # for requests that read the prompt's log-probabilities (echo with logprobs, `prompt_logprobs`).
    max_tokens: int | None = None
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1 means off
    min_p: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logprobs: int | None = None  # None: none; 0: the sampled token only; k: plus the k most likely
    # vLLM's `prompt_logprobs`: each prompt token's log-probability given the tokens before it, with the
    # k most likely at that position (None: none). The whole prompt is computed for it: cached prefix
    # cells hold no logits.
    prompt_logprobs: int | None = None
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    # A GBNF grammar (llama.cpp's format, root rule `root`) every completion must match; None: free text.
    # Faces build it from a response_format (see llmhost/conversation/structured.py).
    grammar: str | None = None
    # OpenAI's `logit_bias`: (token id, value) pairs, each value added to that token's logit before
    # sampling: -100 in effect bans the token, +100 all but forces it. Ids outside the vocabulary are
    # refused against the engine's (`check_token_ids`).
    logit_bias: tuple[tuple[int, float], ...] = ()
    # vLLM's `min_tokens`: end-of-generation and `stop_token_ids` cannot be sampled before this many
    # tokens are generated (stop strings still end the answer).
    min_tokens: int = 0

    def __post_init__(self) -> None:
        _check(self.max_tokens is None or self.max_tokens >= 0, "max_tokens", "must be at least 0")
        _check(
            math.isfinite(self.temperature) and 0.0 <= self.temperature <= 2.0,
            "temperature",
            "must be between 0 and 2",
        )
        _check(0.0 < self.top_p <= 1.0, "top_p", "must be in (0, 1]")
        _check(self.top_k >= -1, "top_k", "must be -1, 0 (off) or a positive integer")
        _check(0.0 <= self.min_p <= 1.0, "min_p", "must be in [0, 1]")
        _check(-2.0 <= self.presence_penalty <= 2.0, "presence_penalty", "must be in [-2, 2]")
        _check(-2.0 <= self.frequency_penalty <= 2.0, "frequency_penalty", "must be in [-2, 2]")
        _check(0.0 < self.repetition_penalty <= 10.0, "repetition_penalty", "must be in (0, 10]")
        _check(
            self.logprobs is None or 0 <= self.logprobs <= MAX_TOP_LOGPROBS,
            "top_logprobs",
            f"must be between 0 and {MAX_TOP_LOGPROBS}",
        )
        _check(
            self.prompt_logprobs is None or 0 <= self.prompt_logprobs <= MAX_TOP_LOGPROBS,
            "prompt_logprobs",
            f"must be between 0 and {MAX_TOP_LOGPROBS}",
        )
        _check(all(s for s in self.stop), "stop", "stop strings must not be empty")
        _check(len(self.stop) <= 16, "stop", "at most 16 stop strings")
        _check(self.grammar is None or bool(self.grammar.strip()), "grammar", "must not be empty")
        # A grammar ends a completion at an end-of-generation token once it is complete; ignoring it
        # would leave nothing the grammar allows.
        _check(self.grammar is None or not self.ignore_eos, "ignore_eos", "cannot be used with a grammar")
        _check(
            all(t >= 0 and math.isfinite(b) and -100.0 <= b <= 100.0 for t, b in self.logit_bias),
            "logit_bias",
            "maps token ids to values between -100 and 100",
        )
        _check(self.min_tokens >= 0, "min_tokens", "must be at least 0")
        _check(
            self.max_tokens is None or self.min_tokens <= self.max_tokens,
            "min_tokens",
            "must be at most max_tokens",
        )

    def check_token_ids(self, vocab_size: int) -> None:
        """400 for token ids the request names that the model's vocabulary does not have."""
        outside = sorted({t for t, _ in self.logit_bias if t >= vocab_size})
        if outside:
            shown = ", ".join(map(str, outside[:5])) + (", …" if len(outside) > 5 else "")
            raise InvalidRequest(
                f"'logit_bias' names token ids outside the vocabulary of {vocab_size}: {shown}",
                param="logit_bias",
            )

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


def _check(ok: bool, param: str, message: str) -> None:
    if not ok:
        raise InvalidRequest(f"'{param}' {message}", param=param)


@dataclass(frozen=True)
class TopLogprob:
    token_id: int
    token_bytes: bytes
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """The log-probability of one token (generated, or of the prompt) under the model, with the most
    likely tokens at its position."""

    token_id: int
    token_bytes: bytes
    logprob: float
    top: tuple[TopLogprob, ...] = ()
    rank: int | None = None  # 1 + how many tokens were more likely at its position; None: not computed


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    # Prompt tokens served from the engine's prefix cache instead of computed; None: the engine
    # does not say (OpenAI's usage.prompt_tokens_details.cached_tokens).
    cached_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Delta:
    """What one sequence produced since its last delta.

    `text` is safe to show: it never ends inside a UTF-8 character or inside a possible stop string.
    The last delta of a sequence has `finish_reason` and `usage` set.
    """

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    # With `SamplingParams.prompt_logprobs`, on the sequence's first delta: one entry per prompt token,
    # None for the first (nothing precedes it).
    prompt_logprobs: list[TokenLogprob | None] | None = None
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None  # the stop string or token id that ended the sequence
    usage: Usage | None = None

    def extend(self, later: Delta) -> None:
        """Append a later delta of the same sequence (its end, when it has one, becomes this one's)."""
        self.text += later.text
        self.token_ids.extend(later.token_ids)
        if later.prompt_logprobs is not None:
            self.prompt_logprobs = later.prompt_logprobs
        if later.logprobs is not None:
            self.logprobs = (self.logprobs or []) + later.logprobs
        if later.finish_reason is not None:
            self.finish_reason = later.finish_reason
            self.stop_reason = later.stop_reason
        if later.usage is not None:
            self.usage = later.usage


@dataclass(frozen=True)
class PromptImage:
    """One image of a prompt, in the form the engine that reads it prepared (`prepare_image`)."""

    num_tokens: int  # placeholder tokens it fills in the prompt
    data: Any  # the engine's own (transformers: the pixel patches and their grid)
    offset: int = -1  # where its placeholder tokens start in the prompt, once placed there


@dataclass(frozen=True)
class EngineInfo:
    """What the layers above need to know about the loaded model and engine."""

    engine: str
    model_path: str
    model_name: str
    max_model_len: int
    max_num_seqs: int
    device: str
    model_size_bytes: int
    vocab_size: int
    chat_template: str | None
    bos_token: str
    eos_token: str
    # Whether `SamplingParams.grammar` is enforced. Faces add grammars of their own (a forced tool call's
    # arguments) only where it is; a `response_format` grammar is refused by an engine that cannot.
    supports_grammar: bool = False
    # The most bytes one token stands for (special-token spellings included), so a text longer than
    # `max_model_len x max_token_bytes` characters is refused without tokenizing it; None: unknown.
    max_token_bytes: int | None = None
    # `SamplingParams.prompt_logprobs` is honoured (and `max_tokens` 0 with it); other engines are never
    # handed it: the pipeline refuses such a request with a 400.
    supports_prompt_logprobs: bool = False
    # A prompt that extends an earlier one reuses its computed KV (prefix caching): a code-loop turn or a
    # conversation's next message costs only its new tokens.
    reuses_prefixes: bool = False
    # A fallback chain (--fallback-model, --engine a,b): what was chosen and why earlier candidates failed.
    load_report: dict[str, Any] | None = None
    # The model reads images (an `ImageEngine`): the chat template writes `image_token_id` once per
    # image, and the pipeline widens it to the tokens the engine's `prepare_image` says the image fills.
    accepts_images: bool = False
    image_token_id: int | None = None


@dataclass(frozen=True)
class EngineStats:
    num_running: int
    num_waiting: int
    kv_cache_usage: float  # 0..1
    num_steps: int  # decode steps done since start
    last_step_num_seqs: int  # sequences decoded in the most recent step
    prefix_cache_queries: int = 0  # prompt tokens looked up in the prefix cache since start
    prefix_cache_hits: int = 0  # of those, tokens found there (not computed)
    prefix_cache_ram_bytes: int = 0  # evicted prefixes' KV states kept in host RAM (llama.cpp engine)
    prefix_cache_ram_restores: int = 0  # of those states, how many were loaded back since start
    kv_layout_switches: int = 0  # llama.cpp engine, automatic KV layout: context recreated with the other
