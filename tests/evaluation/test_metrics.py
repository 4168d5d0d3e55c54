"""Scoring functions, with values worked out by hand (token lists shown so the arithmetic can be checked)."""

from __future__ import annotations

import sys

import pytest

from llmhost.evaluation import metrics
from llmhost.evaluation.metrics import (
    MetricUnavailable,
    contains,
    exact_match,
    get_metric,
    lcs_length,
    rouge_l_f1,
    rouge_l_harness,
    rouge_l_jieba,
    tokenize,
)

CHINESE = "共享内存用于线程块内通信"


def test_identical_chinese_scores_one_with_jieba_and_zero_with_the_harness():
    # The documented seed-003 harness bug: rouge_score's tokenizer keeps only [a-z0-9], so nothing is left.
    assert rouge_l_jieba(CHINESE, CHINESE) == 1.0
    assert rouge_l_harness(CHINESE, CHINESE) == 0.0


def test_partial_chinese_overlap():
    assert tokenize(CHINESE) == ["共享内存", "用于", "线程", "块", "内", "通信"]
    assert tokenize("共享内存速度快") == ["共享内存", "速度", "快"]
    # LCS 1: P = 1/3, R = 1/6, F1 = 2·(1/18)/(1/2) = 2/9
    assert rouge_l_jieba(CHINESE, "共享内存速度快") == pytest.approx(2 / 9)
    assert rouge_l_harness(CHINESE, "共享内存速度快") == 0.0


def test_punctuation_and_whitespace_are_not_words_and_ascii_is_lowercased():
    assert tokenize("CUDA 的 threadIdx 是线程索引。") == ["cuda", "的", "threadidx", "是", "线程", "索引"]
    assert rouge_l_jieba("线程块，是调度单位。", "线程块是调度单位") == 1.0


def test_mixed_chinese_and_ascii():
    ref, pred = "CUDA 的 threadIdx 是线程索引。", "threadIdx 是线程索引"
    # jieba: LCS 4 of [cuda 的 threadidx 是 线程 索引] and [threadidx 是 线程 索引]: P = 1, R = 4/6, F1 = 0.8
    assert rouge_l_jieba(ref, pred) == pytest.approx(0.8)
    # harness: only [cuda threadidx] vs [threadidx] survive: P = 1, R = 1/2, F1 = 2/3
    assert rouge_l_harness(ref, pred) == pytest.approx(2 / 3)
    # an identical mixed answer scores 1.0 in the harness only through its ASCII words
    assert rouge_l_harness("线程块是GPU调度单位", "线程块是GPU调度单位") == 1.0


def test_english_both_modes_agree():
    # [use cuda threadidx now] vs [use cuda threadidx]: P = 1, R = 3/4, F1 = 6/7
    assert rouge_l_jieba("Use CUDA threadIdx now", "use cuda threadidx") == pytest.approx(6 / 7)
    assert rouge_l_harness("Use CUDA threadIdx now", "use cuda threadidx") == pytest.approx(6 / 7)
    assert rouge_l_jieba("a warp", "something else") == 0.0


def test_lcs_and_f1_edge_cases():
    assert lcs_length(list("abcbdab"), list("bdcaba")) == 4
    assert lcs_length([], ["a"]) == 0
    assert rouge_l_f1([], []) == 1.0
    assert rouge_l_f1(["a"], []) == 0.0


def test_exact_and_contains_after_normalisation():
    assert exact_match("Shared Memory.", "  shared memory ") == 1.0
    assert exact_match("共享内存。", "共享内存") == 1.0
    assert exact_match("共享内存", "共享内存很快") == 0.0
    assert contains("共享内存", "答案：共享内存很快。") == 1.0
    assert contains("Shared memory", "It uses SHARED-MEMORY.") == 1.0
    assert contains("寄存器", "共享内存") == 0.0
    assert contains("", "anything") == 0.0  # an empty reference proves nothing


def test_get_metric():
    assert get_metric("rougeL-jieba") is rouge_l_jieba
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        get_metric("bleu")


def test_harness_mode_without_rouge_score_says_how_to_install(monkeypatch):
    metrics._harness_scorer.cache_clear()
    monkeypatch.setitem(sys.modules, "rouge_score", None)
    try:
        with pytest.raises(MetricUnavailable, match=r"llmhost\[eval\]"):
            get_metric("rougeL-harness")
        assert not metrics.harness_available()
    finally:
        metrics._harness_scorer.cache_clear()
