"""The `/v1/completions` wire format on llmhost's side: sampling params out, streamed chunks back in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llmhost.errors import InvalidRequest
from llmhost.types import FinishReason, SamplingParams, TokenLogprob, TopLogprob, Usage

_FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH, "abort": FinishReason.ABORT}


@dataclass(frozen=True)
class Dialect:
    """How one server family spells what the OpenAI schema does not have."""

    top_k_off: int  # "no top-k": -1 for vLLM and SGLang, 0 for llama.cpp (which refuses -1)
    penalty_names: tuple[str, ...]  # repetition penalty
    grammar: Callable[[str], dict[str, Any]] | None  # GBNF grammar fields; None: cannot constrain
    extra: tuple[tuple[str, Any], ...] = ()
    min_logprobs: int = 0  # the least `logprobs` that returns the sampled token's own
    has_logit_bias: bool = True  # OpenAI's `logit_bias` object ({"token id": bias})
    has_min_tokens: bool = True  # vLLM's `min_tokens`
    # vLLM's `prompt_logprobs` (non-streamed answers only: vLLM refuses it with `stream`).
    has_prompt_logprobs: bool = False


DIALECTS: dict[str, Dialect] = {
    # return_token_ids: vLLM streams the sampled ids, so usage and metrics count exactly.
    "vllm": Dialect(
        -1,
        ("repetition_penalty",),
        lambda g: {"structured_outputs": {"grammar": g}},
        (("return_token_ids", True),),
        has_prompt_logprobs=True,
    ),
    "sglang": Dialect(-1, ("repetition_penalty",), lambda g: {"ebnf": g}),
    # LMDeploy's /v1/completions has neither `logit_bias` nor a minimum length.
    "lmdeploy": Dialect(0, ("repetition_penalty",), None, has_logit_bias=False, has_min_tokens=False),
    # Native llama-server answers `logprobs: 0` with none at all: ask for 1 (the sampled token's own comes
    # with one rival, which parse_logprobs drops when none was asked for). Neither it nor llama-cpp-python's
    # server has a minimum length.
    "llama.cpp": Dialect(
        0, ("repeat_penalty",), lambda g: {"grammar": g}, min_logprobs=1, has_min_tokens=False
    ),
    # An attached server of unknown kind: every spelling (servers ignore names they do not know), and
    # no BOS added to a text prompt that already starts with the template's own.
    "generic": Dialect(
        0,
        ("repetition_penalty", "repeat_penalty"),
        lambda g: {"grammar": g, "structured_outputs": {"grammar": g}, "guided_grammar": g},
        (("add_special_tokens", False),),
        has_prompt_logprobs=True,  # an answer without them is refused (parse_prompt_logprobs)
    ),
}


def completion_body(
    model: str,
    prompt: str | Sequence[int],
    params: SamplingParams,
    max_tokens: int,
    dialect: Dialect = DIALECTS["generic"],
) -> dict[str, Any]:
    """A streaming `/v1/completions` request. Every sampling knob is sent explicitly, extensions
    included, because servers' defaults differ (llama_cpp.server: top_k 40, min_p 0.05,
    repeat_penalty 1.1)."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt if isinstance(prompt, str) else list(prompt),
        "max_tokens": max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else dialect.top_k_off,
        "min_p": params.min_p,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    body.update({name: params.repetition_penalty for name in dialect.penalty_names})
    body.update(dialect.extra)
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
    if grammar:
        if dialect.grammar is None:
            raise InvalidRequest(
                "this engine cannot constrain output to a grammar (response_format)", param="response_format"
            )
        body.update(dialect.grammar(grammar))
    if params.logit_bias:
        _require(dialect.has_logit_bias, "logit_bias")
        body["logit_bias"] = {str(token): bias for token, bias in params.logit_bias}
    if params.min_tokens:
        _require(dialect.has_min_tokens, "min_tokens")
        body["min_tokens"] = params.min_tokens
    if params.logprobs is not None:
        # legacy completions: the sampled token plus the k most likely
        body["logprobs"] = max(params.logprobs, dialect.min_logprobs)
    return body


def scoring_body(body: dict[str, Any], num_top: int) -> dict[str, Any]:
    """A `completion_body` that also asks for the prompt's log-probabilities: not streamed (vLLM
    refuses `prompt_logprobs` with `stream`), and at least one token (vLLM refuses `max_tokens` 0
    without `echo`; a caller that wanted none drops it)."""
    scored = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    scored.update(stream=False, prompt_logprobs=num_top, max_tokens=max(1, body["max_tokens"]))
    return scored


def parse_prompt_logprobs(raw: object, prompt: Sequence[int], num_top: int) -> list[TokenLogprob | None]:
    """vLLM's `prompt_logprobs` (per position null or {token id: {logprob, rank, decoded_token}}, the
    prompt's own token among them) to llmhost's type; InvalidRequest when the server sent none (it does
    not know the field) or not one entry per prompt token."""
    if not isinstance(raw, list) or len(raw) != len(prompt):
        raise InvalidRequest(
            "the engine server did not return the prompt's log-probabilities ('prompt_logprobs')",
            param="prompt_logprobs",
        )
    out: list[TokenLogprob | None] = [None]
    for token, entry in zip(prompt[1:], raw[1:], strict=True):
        ranked = (
            {int(k): v for k, v in entry.items() if isinstance(v, dict)} if isinstance(entry, dict) else {}
        )
        own = ranked.get(token)
        if own is None:
            raise InvalidRequest(
                "the engine server's 'prompt_logprobs' miss a prompt token", param="prompt_logprobs"
            )
        rivals = sorted(ranked.items(), key=lambda kv: kv[1].get("logprob", float("-inf")), reverse=True)
        top = tuple(TopLogprob(t, _decoded(v), float(v.get("logprob", 0.0))) for t, v in rivals[:num_top])
        rank = own.get("rank")
        out.append(
            TokenLogprob(
                token,
                _decoded(own),
                float(own.get("logprob", 0.0)),
                top,
                rank=rank if isinstance(rank, int) else None,
            )
        )
    return out


def _decoded(entry: dict[str, Any]) -> bytes:
    return _bytes(str(entry.get("decoded_token") or ""))


def _require(is_supported: bool, field: str) -> None:
    if not is_supported:
        raise InvalidRequest(f"'{field}' is not supported by this engine", param=field)


def finish_reason(value: object) -> FinishReason | None:
    if value is None:
        return None
    return _FINISH.get(str(value), FinishReason.STOP)


def parse_usage(num_prompt: int, raw: object, num_completion: int) -> Usage:
    """The usage of a finished sequence: the server's completion count and prefix-cache hits where its
    `usage` says them (vLLM with --enable-prompt-tokens-details, llama-server, SGLang), else what was
    counted here. The prompt count stays llmhost's own (it tokenized the prompt)."""
    if not isinstance(raw, dict):
        return Usage(num_prompt, num_completion)
    completion = raw.get("completion_tokens")
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        num_prompt,
        completion if isinstance(completion, int) and completion >= 0 else num_completion,
        cached_tokens=min(cached, num_prompt) if isinstance(cached, int) and cached >= 0 else None,
    )


def parse_logprobs(raw: object, want_top: int, token_id: Callable[[str], int]) -> list[TokenLogprob] | None:
    """Completion logprobs to llmhost's type: the legacy shape ({tokens, token_logprobs, top_logprobs}),
    whose token strings get ids from `token_id` (the local vocabulary), or the chat shape native
    llama-server sends ({content: [{id, bytes, logprob, top_logprobs}]}), which carries ids and bytes."""
    if not isinstance(raw, dict):
        return None
    if isinstance(raw.get("content"), list):
        return [_content_logprob(item, want_top) for item in raw["content"] if isinstance(item, dict)]
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


def _content_logprob(item: dict[str, Any], want_top: int) -> TokenLogprob:
    rivals = sorted(
        (t for t in item.get("top_logprobs") or [] if isinstance(t, dict)),
        key=lambda t: t.get("logprob", float("-inf")),
        reverse=True,
    )[:want_top]
    return TokenLogprob(
        int(item.get("id", -1)),
        _content_bytes(item),
        float(item.get("logprob") or 0.0),
        tuple(
            TopLogprob(int(t.get("id", -1)), _content_bytes(t), float(t.get("logprob") or 0.0))
            for t in rivals
        ),
    )


def _content_bytes(item: dict[str, Any]) -> bytes:
    raw = item.get("bytes")
    return bytes(raw) if isinstance(raw, list) else str(item.get("token", "")).encode("utf-8")


def _bytes(token: str) -> bytes:
    # vLLM writes a token that is not whole UTF-8 as "bytes:\xe4\xbd"; keep the raw bytes.
    if token.startswith("bytes:"):
        try:
            return token[6:].encode("latin-1").decode("unicode_escape").encode("latin-1")
        except (UnicodeError, ValueError):
            pass
    return token.encode("utf-8")
