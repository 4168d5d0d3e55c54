"""The `/v1/completions` wire format on llmhost's side: sampling params out, streamed chunks back in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from llmhost.types import FinishReason, SamplingParams, TokenLogprob, TopLogprob

_FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH, "abort": FinishReason.ABORT}


def completion_body(
    model: str, prompt: str | Sequence[int], params: SamplingParams, max_tokens: int, *, top_k_off: int = 0
) -> dict[str, Any]:
    """A streaming `/v1/completions` request. Every sampling knob is sent explicitly, including the
    extensions, because servers' defaults differ (llama_cpp.server: top_k 40, min_p 0.05,
    repeat_penalty 1.1); the names cover vLLM/SGLang (`repetition_penalty`) and llama.cpp
    (`repeat_penalty`), and servers ignore the names they do not know. `top_k_off` is how the server
    spells "no top-k" (-1 for older vLLM and SGLang, 0 for llama.cpp, which refuses -1)."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt if isinstance(prompt, str) else list(prompt),
        "max_tokens": max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else top_k_off,
        "min_p": params.min_p,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "repetition_penalty": params.repetition_penalty,
        "repeat_penalty": params.repetition_penalty,
        "stream": True,
        "stream_options": {"include_usage": True},
        # The prompt was rendered with the template's own BOS text; the server must not add another.
        "add_special_tokens": False,
    }
    if params.seed is not None:
        body["seed"] = params.seed
    if params.stop:
        body["stop"] = list(params.stop)
    if params.stop_token_ids:
        body["stop_token_ids"] = list(params.stop_token_ids)
    if params.ignore_eos:
        body["ignore_eos"] = True
    if params.include_stop_str_in_output:
        body["include_stop_str_in_output"] = True
    grammar = getattr(params, "grammar", None)
    if grammar:  # GBNF: llama.cpp reads `grammar`, vLLM `structured_outputs` (older: `guided_grammar`)
        body["grammar"] = grammar
        body["structured_outputs"] = {"grammar": grammar}
        body["guided_grammar"] = grammar
    if params.logprobs is not None:
        # Legacy completions: `logprobs: k` returns the sampled token plus the k most likely.
        body["logprobs"] = max(params.logprobs, 1) if params.logprobs else 0
    return body


def finish_reason(value: object) -> FinishReason | None:
    if value is None:
        return None
    return _FINISH.get(str(value), FinishReason.STOP)


def parse_logprobs(raw: object, want_top: int, token_id: Callable[[str], int]) -> list[TokenLogprob] | None:
    """Legacy completion logprobs ({tokens, token_logprobs, top_logprobs}) to llmhost's type.

    The wire carries token strings, not ids; ids come from `token_id` (the local vocabulary)."""
    if not isinstance(raw, dict):
        return None
    tokens = raw.get("tokens") or []
    values = raw.get("token_logprobs") or []
    tops = raw.get("top_logprobs") or [None] * len(tokens)
    out: list[TokenLogprob] = []
    for token, value, top in zip(tokens, values, tops, strict=False):
        rivals: tuple[TopLogprob, ...] = ()
        if want_top and isinstance(top, dict):
            ranked = sorted(top.items(), key=lambda kv: kv[1], reverse=True)[:want_top]
            rivals = tuple(TopLogprob(token_id(t), _bytes(t), float(lp)) for t, lp in ranked)
        out.append(TokenLogprob(token_id(token), _bytes(token), float(value or 0.0), rivals))
    return out


def _bytes(token: str) -> bytes:
    # vLLM writes a token that is not whole UTF-8 as "bytes:\xe4\xbd"; keep the raw bytes.
    if token.startswith("bytes:"):
        try:
            return token[6:].encode("latin-1").decode("unicode_escape").encode("latin-1")
        except (UnicodeError, ValueError):
            pass
    return token.encode("utf-8")
