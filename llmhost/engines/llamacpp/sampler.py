"""Per-sequence sampling with llama.cpp's native sampler chains, plus log-probabilities.

Each sequence owns its chain (its own seed and penalty history), so sequences decoded in the same
batch never influence each other's randomness.
"""

from __future__ import annotations

import llama_cpp as C
import numpy as np

from llmhost.types import SamplingParams, TokenLogprob, TopLogprob

from .backend import LlamaContext, LlamaModel


class SequenceSampler:
    def __init__(self, model: LlamaModel, params: SamplingParams, prompt_tokens: list[int], window: int):
        # Plain greedy needs no chain: a numpy argmax over the logits row is ~5x cheaper than
        # llama_sampler_sample, which first copies the whole vocabulary into a candidates array.
        self._is_plain_greedy = (
            params.is_greedy
            and params.repetition_penalty == 1.0
            and not params.presence_penalty
            and not params.frequency_penalty
        )
        self._chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        add = lambda smpl: C.llama_sampler_chain_add(self._chain, smpl)  # noqa: E731
        n_vocab = model.n_vocab
        # repetition_penalty follows Hugging Face/vLLM: it covers the prompt and the output, so this
        # sampler is fed the prompt. presence/frequency follow OpenAI: the output only, hence a second one.
        if params.repetition_penalty != 1.0:
            rep = C.llama_sampler_init_penalties(n_vocab, window, params.repetition_penalty, 0.0, 0.0)
            for t in prompt_tokens[-window:]:
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
        if self._is_plain_greedy:
            return int(np.argmax(ctx.logits(batch_index)))
        return C.llama_sampler_sample(self._chain, ctx.ptr, batch_index)

    def close(self) -> None:
        if self._chain is not None:
            C.llama_sampler_free(self._chain)
            self._chain = None


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
