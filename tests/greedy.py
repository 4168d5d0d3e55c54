"""Comparing greedy answers of llama.cpp runs that may round differently.

llama.cpp's CPU kernels are not batch-invariant: computing a prompt in other chunks (a prefix from the
cache, the rest now) or with its KV cells elsewhere in a shared pool changes logits by up to ~1 here
(measured on the embedded model: 0.5-1.0 at the last prompt token). A greedy answer can then take the
other branch at a near-tie. So answers of runs that differ in that way are compared as vLLM's tests
compare them: equal up to the first difference, and there both tokens must be near the top under the
other run's distribution (a crosstalk bug, a wrong position or sequence id, diverges where the
reference is sure).
"""

from __future__ import annotations

from collections.abc import Sequence

from llmhost.types import TokenLogprob

MAX_MARGIN = 2.5  # nats: twice the largest logit change measured between chunkings, plus slack


def assert_greedy_close(
    reference: tuple[list[int], Sequence[TokenLogprob]],
    other: tuple[list[int], Sequence[TokenLogprob]],
    what: object = "",
) -> None:
    """`reference` and `other` are (token ids, per-token logprobs with top alternatives) of greedy runs."""
    ref_tokens, ref_lps = reference
    got_tokens, got_lps = other
    for i, (a, b) in enumerate(zip(ref_tokens, got_tokens, strict=False)):
        if a == b:
            continue
        for lp, mine, theirs in ((ref_lps[i], a, b), (got_lps[i], b, a)):
            top = {t.token_id: t.logprob for t in lp.top}
            assert lp.token_id == mine
            assert theirs in top and top[mine] - top[theirs] <= MAX_MARGIN, (
                f"{what}: diverged at token {i} where the run was sure: {mine} vs {theirs}, top {top}"
            )
        return
    assert len(ref_tokens) == len(got_tokens), what
