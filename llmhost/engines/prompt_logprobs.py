"""Prompt log-probabilities from logits rows: what each prompt token's probability was, given the tokens
before it (vLLM's `prompt_logprobs`, and what an echoed prompt's `logprobs` report).

Row p holds the logits the model computed at prompt position p, which predict the token at p + 1. The
values are the model's raw distribution (log-softmax of the logits, in float64 as the generated tokens'
logprobs are), with the token's rank among the whole vocabulary and the `num_top` most likely tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from llmhost.types import TokenLogprob, TopLogprob

# Rows scored at once: bounds the float64 copy (rows x vocabulary) a long prompt would otherwise make.
_BLOCK_ROWS = 32


def score_rows(
    rows: Sequence[np.ndarray], targets: Sequence[int], num_top: int, piece: Callable[[int], bytes]
) -> list[TokenLogprob]:
    """The log-probability of `targets[i]` under logits `rows[i]`, its rank (1 = most likely) and the
    `num_top` most likely tokens of that row; `piece` gives a token's bytes."""
    out: list[TokenLogprob] = []
    for start in range(0, len(rows), _BLOCK_ROWS):
        block = np.stack([np.asarray(r, dtype=np.float64) for r in rows[start : start + _BLOCK_ROWS]])
        wanted = np.asarray(targets[start : start + _BLOCK_ROWS], dtype=np.int64)
        peak = block.max(axis=1, keepdims=True)
        log_z = peak + np.log(np.exp(block - peak).sum(axis=1, keepdims=True))
        chosen = block[np.arange(len(wanted)), wanted]
        ranks = (block > chosen[:, None]).sum(axis=1) + 1
        tops: np.ndarray | None = None
        if num_top > 0:
            tops = np.argpartition(-block, num_top - 1, axis=1)[:, :num_top]
        for i, token in enumerate(wanted.tolist()):
            top: tuple[TopLogprob, ...] = ()
            if tops is not None:
                row, z = block[i], float(log_z[i, 0])
                ids = tops[i][np.argsort(-row[tops[i]], kind="stable")]
                top = tuple(TopLogprob(int(t), piece(int(t)), float(row[t] - z)) for t in ids)
            out.append(
                TokenLogprob(token, piece(token), float(chosen[i] - log_z[i, 0]), top, rank=int(ranks[i]))
            )
    return out
