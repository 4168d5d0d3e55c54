"""Answer scoring: pure functions from (reference, prediction) to a score in [0, 1].

- `rougeL-jieba`: RougeL F1 (longest common subsequence) over jieba words, Chinese kept. Whitespace and
  punctuation tokens are dropped and text is lowercased, so identical answers score 1.0 in any language.
- `rougeL-harness`: the seed-003 grader exactly: `rouge_score`'s RougeL F-measure on
  `" ".join(jieba.lcut(x))`. Its default tokenizer keeps only `[a-z0-9]`, so a Chinese-only answer scores
  0.0 even when it is identical to the reference. Use it to predict that grade, not to judge quality.
- `exact`: equal after normalisation (NFKC, lowercase, whitespace and punctuation removed).
- `contains`: the normalised reference occurs in the normalised prediction.
"""

from __future__ import annotations

import functools
import logging
import unicodedata
from collections.abc import Callable, Sequence

METRICS = ("rougeL-jieba", "rougeL-harness", "exact", "contains")


class MetricUnavailable(RuntimeError):
    """The metric needs a package that is not installed."""


@functools.cache
def _jieba():  # imported on first use: jieba takes ~1 s to build its dictionary
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


def _is_noise(token: str) -> bool:
    """Whitespace or punctuation only (Unicode categories Z*, C* and P*): not a word."""
    return all(ch.isspace() or unicodedata.category(ch)[0] in "PZC" for ch in token)


def tokenize(text: str) -> list[str]:
    """jieba words of `text`, lowercased, without whitespace or punctuation tokens."""
    return [tok.strip().lower() for tok in _jieba().lcut(text) if not _is_noise(tok)]


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists, in O(len(b)) memory."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l_f1(reference_tokens: Sequence[str], prediction_tokens: Sequence[str]) -> float:
    """RougeL F1 = 2PR/(P+R), P = LCS/len(prediction), R = LCS/len(reference); two empty lists score 1.0."""
    if not reference_tokens and not prediction_tokens:
        return 1.0
    lcs = lcs_length(reference_tokens, prediction_tokens)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(prediction_tokens), lcs / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


def rouge_l_jieba(reference: str, prediction: str) -> float:
    return rouge_l_f1(tokenize(reference), tokenize(prediction))


@functools.cache
def _harness_scorer():
    try:
        from rouge_score import rouge_scorer
    except ImportError as exc:
        raise MetricUnavailable(
            "--metric rougeL-harness needs the rouge-score package: pip install 'llmhost[eval]'"
        ) from exc
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def harness_available() -> bool:
    try:
        _harness_scorer()
    except MetricUnavailable:
        return False
    return True


def rouge_l_harness(reference: str, prediction: str) -> float:
    """The seed-003 grader, call for call (including its argument order: reference first)."""
    jieba = _jieba()
    scores = _harness_scorer().score(" ".join(jieba.lcut(reference)), " ".join(jieba.lcut(prediction)))
    return float(scores["rougeL"].fmeasure)


def normalize(text: str) -> str:
    """NFKC, lowercase, and every whitespace and punctuation character removed."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if not _is_noise(ch))


def exact_match(reference: str, prediction: str) -> float:
    return float(normalize(reference) == normalize(prediction))


def contains(reference: str, prediction: str) -> float:
    ref = normalize(reference)
    return float(bool(ref) and ref in normalize(prediction))


_SCORERS: dict[str, Callable[[str, str], float]] = {
    "rougeL-jieba": rouge_l_jieba,
    "rougeL-harness": rouge_l_harness,
    "exact": exact_match,
    "contains": contains,
}


def get_metric(name: str) -> Callable[[str, str], float]:
    """The scorer `fn(reference, prediction) -> float`; `MetricUnavailable` if its package is missing."""
    try:
        scorer = _SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}") from None
    if name == "rougeL-harness":
        _harness_scorer()
    return scorer
