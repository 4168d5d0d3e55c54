"""Per-sequence sampling with llama.cpp's native sampler chains, plus log-probabilities.

Each sequence owns its chain (its own seed and penalty history), so sequences decoded in the same
batch never influence each other's randomness.

A sequence with a grammar (structured outputs) also owns llama.cpp's grammar sampler, which masks every
token that cannot continue the grammar (end-of-generation included until the grammar is complete).
Masking the whole vocabulary costs milliseconds per token, so, as llama.cpp's own server does, the
chain first picks a token unconstrained and only a token the grammar rejects is picked again with the
grammar applied first. For greedy decoding this is exact; for plain temperature sampling it is
rejection sampling, so still the masked distribution; with top-k/top-p the truncation may differ a
little from masking first. Constrained sequences go through an explicit candidates array instead of
`llama_sampler_sample`, so a dead end (no token allowed) ends the sequence instead of feeding the
grammar a token it rejects, which llama.cpp answers by aborting the process.

`logit_bias` and `min_tokens` change the logits before any sampler sees them: a copy of the row gets
the biases added and, for the first `min_tokens` tokens, end-of-generation and `stop_token_ids` set to
-inf; that copy goes through the explicit candidates array too. Log-probabilities stay the model's own
(the scheduler reads them from the unchanged row), as vLLM reports them by default.
"""

from __future__ import annotations

import ctypes
import logging

import llama_cpp as C
import numpy as np

from llmhost.errors import InvalidRequest
from llmhost.types import SamplingParams, TokenLogprob, TopLogprob

from .backend import LlamaContext, LlamaModel

log = logging.getLogger("llmhost.llamacpp")

# llama_token_data as numpy sees it: one record per vocabulary entry, filled from a logits row at once.
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
assert _TOKEN_DATA.itemsize == ctypes.sizeof(C.llama_token_data)


def check_grammar(model: LlamaModel, grammar: str) -> None:
    """Raise InvalidRequest unless llama.cpp accepts the grammar (called before a request is queued)."""
    smpl = C.llama_sampler_init_grammar(model.vocab, grammar.encode("utf-8"), b"root")
    if not smpl:
        raise InvalidRequest(
            "the grammar is not valid GBNF (see the server log for the reason)", param="grammar"
        )
    C.llama_sampler_free(smpl)


class SequenceSampler:
    def __init__(self, model: LlamaModel, params: SamplingParams, prompt_tokens: list[int], window: int):
        # Plain greedy needs no chain: a numpy argmax over the logits row is ~5x cheaper than
        # llama_sampler_sample, which first copies the whole vocabulary into a candidates array.
        is_argmax = (
            params.is_greedy
            and params.repetition_penalty == 1.0
            and not params.presence_penalty
            and not params.frequency_penalty
        )
        self._is_plain_greedy = is_argmax and params.grammar is None
        self._is_argmax_first = is_argmax  # a constrained greedy sequence checks the argmax first
        self._chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        add = lambda smpl: C.llama_sampler_chain_add(self._chain, smpl)  # noqa: E731
        n_vocab = model.n_vocab
        self._eog = model.eog_token_ids[0] if model.eog_token_ids else model.eos_token_id
        self._bias = _LogitAdjustments(model, params)
        self._grammar = None
        if params.grammar is not None:
            self._grammar = C.llama_sampler_init_grammar(model.vocab, params.grammar.encode("utf-8"), b"root")
            if not self._grammar:  # check_grammar ran before the request was queued; this is a backstop
                raise InvalidRequest("the grammar is not valid GBNF", param="grammar")
            self._one = (C.llama_token_data * 1)()  # a single candidate: checks one token against the grammar
            self._one_array = C.llama_token_data_array(self._one, 1, -1, False)
        if params.grammar is not None or self._bias.is_active:
            self._ids = np.arange(n_vocab, dtype=np.int32)
            self._candidates = np.empty(n_vocab, dtype=_TOKEN_DATA)
            self._array = C.llama_token_data_array()
        # repetition_penalty follows Hugging Face/vLLM: it covers the prompt and the output, so this
        # sampler is fed the prompt. presence/frequency follow OpenAI: the output only, hence a second one.
        if params.repetition_penalty != 1.0:
            rep = C.llama_sampler_init_penalties(n_vocab, window, params.repetition_penalty, 0.0, 0.0)
            for t in prompt_tokens[-window:]:
                if t >= 0:  # an image's key (kv_slots.image_key) is no token: nothing to penalize
                    C.llama_sampler_accept(rep, t)
            add(rep)
        if params.presence_penalty or params.frequency_penalty:
            add(
                C.llama_sampler_init_penalties(
                    n_vocab, window, 1.0, params.frequency_penalty, params.presence_penalty
                )
            )
        if params.is_greedy:
            add(C.llama_sampler_init_greedy())
        else:
            add(C.llama_sampler_init_temp(params.temperature))
            if params.top_k > 0:
                add(C.llama_sampler_init_top_k(params.top_k))
            if params.top_p < 1.0:
                add(C.llama_sampler_init_top_p(params.top_p, 1))
            if params.min_p > 0.0:
                add(C.llama_sampler_init_min_p(params.min_p, 1))
            seed = C.LLAMA_DEFAULT_SEED if params.seed is None else params.seed & 0xFFFFFFFF
            add(C.llama_sampler_init_dist(seed))

    def sample(self, ctx: LlamaContext, batch_index: int) -> int:
        """Pick the next token from the logits at `batch_index`; the chain remembers it for penalties."""
        adjusted = self._bias.next_row(ctx.logits(batch_index)) if self._bias.is_active else None
        if self._is_plain_greedy:
            return int(np.argmax(ctx.logits(batch_index) if adjusted is None else adjusted))
        if self._grammar is not None:
            return self._sample_constrained(ctx.logits(batch_index) if adjusted is None else adjusted)
        if adjusted is not None:
            token = self._pick(adjusted, with_grammar=False)
            if token < 0:  # the samplers left nothing finite (cannot happen with finite biases): be greedy
                token = int(np.argmax(adjusted))
            C.llama_sampler_accept(self._chain, token)
            return token
        return C.llama_sampler_sample(self._chain, ctx.ptr, batch_index)

    def _sample_constrained(self, logits: np.ndarray) -> int:
        token = int(np.argmax(logits)) if self._is_argmax_first else self._pick(logits, with_grammar=False)
        if token < 0 or not self._grammar_allows(token):
            token = self._pick(logits, with_grammar=True)
            if token < 0:  # nothing the grammar allows is left: end rather than accept a rejected token
                log.warning("grammar dead end: no token can continue it; ending the sequence")
                return self._eog
        C.llama_sampler_accept(self._grammar, token)
        C.llama_sampler_accept(self._chain, token)
        return token

    def _pick(self, logits: np.ndarray, *, with_grammar: bool) -> int:
        """What llama_sampler_sample does, without accepting: the chosen token, or -1 if none is allowed."""
        cands, arr = self._candidates, self._array
        cands["id"] = self._ids  # the samplers sort and truncate the array in place
        cands["logit"] = logits
        cands["p"] = 0.0
        arr.data = cands.ctypes.data_as(C.llama_token_data_p)
        arr.size = len(cands)
        arr.selected = -1
        arr.sorted = False
        if with_grammar:
            C.llama_sampler_apply(self._grammar, ctypes.byref(arr))
        C.llama_sampler_apply(self._chain, ctypes.byref(arr))
        if not 0 <= arr.selected < arr.size:
            return -1
        chosen = arr.data[arr.selected]
        return int(chosen.id) if np.isfinite(chosen.logit) else -1

    def _grammar_allows(self, token: int) -> bool:
        one = self._one[0]
        one.id, one.logit, one.p = token, 0.0, 0.0
        self._one_array.data = ctypes.cast(self._one, C.llama_token_data_p)
        self._one_array.size, self._one_array.selected, self._one_array.sorted = 1, -1, False
        C.llama_sampler_apply(self._grammar, ctypes.byref(self._one_array))
        return bool(np.isfinite(self._one[0].logit))

    def close(self) -> None:
        if self._chain is not None:
            C.llama_sampler_free(self._chain)
            self._chain = None
        if self._grammar is not None:
            C.llama_sampler_free(self._grammar)
            self._grammar = None


class _LogitAdjustments:
    """`logit_bias` and `min_tokens` for one sequence: `next_row` is called once per generated token
    and returns the changed copy of its logits row, or None once nothing changes any more."""

    def __init__(self, model: LlamaModel, params: SamplingParams) -> None:
        self._ids = np.array([t for t, _ in params.logit_bias], dtype=np.int64)
        self._values = np.array([b for _, b in params.logit_bias], dtype=np.float32)
        banned = set(params.stop_token_ids) | (set() if params.ignore_eos else set(model.eog_token_ids))
        self._banned = np.array(sorted(t for t in banned if 0 <= t < model.n_vocab), dtype=np.int64)
        self._num_banned_left = params.min_tokens if len(self._banned) else 0  # tokens still to guard

    @property
    def is_active(self) -> bool:
        return bool(len(self._ids)) or self._num_banned_left > 0

    def next_row(self, logits: np.ndarray) -> np.ndarray | None:
        if not self.is_active:
            return None
        row = logits.copy()
        if len(self._ids):
            row[self._ids] += self._values
        if self._num_banned_left > 0:
            row[self._banned] = -np.inf
            self._num_banned_left -= 1
        return row


def token_logprob(model: LlamaModel, logits: np.ndarray, token_id: int, num_top: int) -> TokenLogprob:
    """Log-probabilities under the model's raw distribution (before temperature and penalties)."""
    x = logits.astype(np.float64, copy=False)
    m = float(x.max())
    log_z = m + float(np.log(np.exp(x - m).sum()))
    top: tuple[TopLogprob, ...] = ()
    if num_top > 0:
        idx = np.argpartition(-x, num_top - 1)[:num_top]
        idx = idx[np.argsort(-x[idx], kind="stable")]
        top = tuple(TopLogprob(int(i), model.piece(int(i)), float(x[i] - log_z)) for i in idx)
    return TokenLogprob(token_id, model.piece(token_id), float(x[token_id] - log_z), top)
