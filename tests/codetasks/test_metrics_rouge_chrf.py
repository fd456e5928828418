"""ROUGE-L (hand-worked LCS) and chrF (hand-worked character n-gram counts)."""

from __future__ import annotations

import pytest

from codetasks.metrics.chrf import chrf
from codetasks.metrics.rouge import rouge_l


def test_rouge_l_equal_lengths() -> None:
    # LCS("the cat sat on the mat", "the cat is on the mat") = "the cat on the mat" = 5;
    # P = R = 5/6, so F = 5/6.
    score = rouge_l(["the cat sat on the mat"], ["the cat is on the mat"])
    assert score == pytest.approx(100 * 5 / 6)


def test_rouge_l_unequal_lengths() -> None:
    # LCS("a b c d", "a c e") = "a c" = 2; P = 2/4, R = 2/3, F = 2PR/(P+R) = 4/7.
    assert rouge_l(["a b c d"], ["a c e"]) == pytest.approx(100 * 4 / 7)


def test_rouge_l_ignores_case_and_punctuation_and_averages() -> None:
    # Pair 1 tokenises to identical "hello world" (F = 1); pair 2 shares nothing (F = 0).
    assert rouge_l(["Hello, World!", "x"], ["hello world", "y"]) == pytest.approx(50.0)


def test_chrf_identical_and_hand_worked() -> None:
    assert chrf(["return a + b;"], ["return a + b;"]) == pytest.approx(100.0)
    # "abc" vs "abd": char 1-grams 2/3 match, 2-grams 1/2 (ab), 3-grams 0/1; longer orders do
    # not exist. Precision = recall = (2/3 + 1/2 + 0) / 3 = 7/18, so F(beta=2) = 7/18.
    assert chrf(["abc"], ["abd"]) == pytest.approx(100 * 7 / 18)


def test_misaligned_inputs_are_rejected() -> None:
    with pytest.raises(ValueError):
        rouge_l(["a"], [])
    with pytest.raises(ValueError):
        chrf(["a", "b"], ["a"])
