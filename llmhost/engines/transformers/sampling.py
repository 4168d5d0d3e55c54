"""Per-sequence sampling over one row of logits, and log-probabilities.

Each sequence owns its torch.Generator (its own seed) and its penalty state, so sequences decoded in
the same batch never influence each other's randomness. The order of the sampling steps follows
llama.cpp's chain (penalties, temperature, top-k, top-p, min-p, draw), so both engines read the same
parameters the same way. `logit_bias` and `min_tokens` (end-of-generation and `stop_token_ids` at -inf for
the first `min_tokens` tokens) change the raw logits first, as in the llama.cpp engine; log-probabilities
stay the model's own.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

from llmhost.types import SamplingParams, TokenLogprob, TopLogprob


class SequenceSampler:
    def __init__(
        self,
        params: SamplingParams,
        prompt: Sequence[int],
        vocab_size: int,
        device: torch.device,
        eog_token_ids: Collection[int] = (),
    ):
        self._params = params
        self._is_greedy_argmax = (
            params.is_greedy
            and params.repetition_penalty == 1.0
            and not params.presence_penalty
            and not params.frequency_penalty
        )
        self._bias_ids: torch.Tensor | None = None
        if params.logit_bias:
            self._bias_ids = torch.tensor([t for t, _ in params.logit_bias], dtype=torch.long, device=device)
            self._bias_values = torch.tensor(
                [b for _, b in params.logit_bias], dtype=torch.float32, device=device
            )
        banned = set(params.stop_token_ids) | (set() if params.ignore_eos else set(eog_token_ids))
        banned = {t for t in banned if 0 <= t < vocab_size}
        self._banned = torch.tensor(sorted(banned), dtype=torch.long, device=device)
        self._num_banned_left = params.min_tokens if banned else 0  # tokens whose end is still held off
        # repetition_penalty follows Hugging Face/vLLM (prompt and output); presence/frequency follow
        # OpenAI (output only).
        self._seen: torch.Tensor | None = None
        if params.repetition_penalty != 1.0:
            self._seen = torch.zeros(vocab_size, dtype=torch.bool, device=device)
            self._seen[torch.tensor(list(prompt), dtype=torch.long, device=device)] = True
        self._counts: torch.Tensor | None = None
        if params.presence_penalty or params.frequency_penalty:
            self._counts = torch.zeros(vocab_size, dtype=torch.float32, device=device)
        self._generator: torch.Generator | None = None
        if not params.is_greedy:
            self._generator = torch.Generator(device=device)
            if params.seed is None:
                self._generator.seed()
            else:
                self._generator.manual_seed(params.seed & 0xFFFFFFFFFFFFFFFF)

    @property
    def is_plain_greedy(self) -> bool:
        """Whether the next token is the raw logits' argmax (the scheduler takes it for all rows at once)."""
        return self._is_greedy_argmax and self._bias_ids is None and self._num_banned_left <= 0

    def sample(self, logits: torch.Tensor) -> int:
        """Pick the next token from one row of raw logits, [vocab]."""
        p = self._params
        x = logits.float()
        if self._bias_ids is not None:
            x = x.index_add(0, self._bias_ids, self._bias_values)
        if self._num_banned_left > 0:
            x = x.index_fill(0, self._banned, float("-inf"))
        if self._seen is not None:
            penalised = torch.where(x > 0, x / p.repetition_penalty, x * p.repetition_penalty)
            x = torch.where(self._seen, penalised, x)
        if self._counts is not None:
            x = x - p.frequency_penalty * self._counts - p.presence_penalty * (self._counts > 0).float()
        if p.is_greedy:
            return int(torch.argmax(x))
        x = x / p.temperature
        if p.top_k > 0 and p.top_k < x.shape[-1]:
            kth = torch.topk(x, p.top_k).values[-1]
            x = x.masked_fill(x < kth, float("-inf"))
        if p.top_p < 1.0:
            sorted_x, order = torch.sort(x, descending=True)
            cumulative = sorted_x.softmax(-1).cumsum(-1)
            # Drop a token once the ones before it already reach top_p; the first always stays.
            drop = (cumulative - sorted_x.softmax(-1)) >= p.top_p
            x = x.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
        probs = x.softmax(-1)
        if p.min_p > 0.0:
            probs = probs.masked_fill(probs < p.min_p * probs.max(), 0.0)
        return int(torch.multinomial(probs, 1, generator=self._generator))

    def accept(self, token: int) -> None:
        """Remember a generated token for the penalties (and count it for `min_tokens`)."""
        self._num_banned_left -= 1
        if self._seen is not None:
            self._seen[token] = True
        if self._counts is not None:
            self._counts[token] += 1


def token_logprob(logits: torch.Tensor, token_id: int, num_top: int, table: Sequence[bytes]) -> TokenLogprob:
    """Log-probabilities under the model's raw distribution (before temperature and penalties)."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    top: tuple[TopLogprob, ...] = ()
    if num_top > 0:
        values, indices = torch.topk(logp, num_top)
        top = tuple(
            TopLogprob(int(i), table[int(i)], float(v))
            for v, i in zip(values.tolist(), indices.tolist(), strict=True)
        )
    return TokenLogprob(token_id, table[token_id], float(logp[token_id]), top)
