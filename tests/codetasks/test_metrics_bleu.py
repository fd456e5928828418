"""BLEU-4 (sacrebleu), CodeXGLUE smoothed BLEU-4 and exact match on hand-worked cases."""

from __future__ import annotations

import math
import sys

import pytest

from codetasks.metrics.bleu import (
    corpus_bleu4,
    exact_match,
    sentence_smoothed_bleu4,
    smoothed_bleu4,
)

HYP = "the cat sat on the mat"
REF = "the cat is on the mat"


def test_identical_text_scores_100() -> None:
    texts = ["public int Add(int a, int b) { return a + b; }", "x = 1"]
    assert corpus_bleu4(texts, texts) == pytest.approx(100.0)
    assert exact_match(texts, texts) == 100.0
    assert smoothed_bleu4(texts, texts) == pytest.approx(100.0)


def test_corpus_bleu4_hand_worked_with_exp_smoothing() -> None:
    # HYP vs REF: 1-grams 5/6 (the x2, cat, on, mat), 2-grams 3/5 (the cat, on the, the mat),
    # 3-grams 1/4 (on the mat), 4-grams 0/3, which sacrebleu's 'exp' smoothing turns into
    # 1/(2*3). Equal lengths, so BP = 1: BLEU = (5/6 * 3/5 * 1/4 * 1/6) ** (1/4) = (1/48)**0.25.
    assert corpus_bleu4([HYP], [REF]) == pytest.approx(100 * (1 / 48) ** 0.25)


def test_corpus_bleu4_pools_counts_over_the_corpus() -> None:
    # Adding the exact pair "a b c d" (4/4, 3/3, 2/2, 1/1) to the pair above pools the counts:
    # 9/10, 6/8, 3/6, 1/4 -> (27/320) ** (1/4); the mean of the sentence scores would differ.
    score = corpus_bleu4([HYP, "a b c d"], [REF, "a b c d"])
    assert score == pytest.approx(100 * (27 / 320) ** 0.25)


def test_smoothed_bleu4_adds_one_above_unigrams() -> None:
    # 1-grams 5/6; 2-grams (3+1)/(5+1); 3-grams (1+1)/(4+1); 4-grams (0+1)/(3+1); BP log 0.
    # Product 5/6 * 4/6 * 2/5 * 1/4 = 1/18.
    assert sentence_smoothed_bleu4(HYP, REF) == pytest.approx((1 / 18) ** 0.25)


def test_smoothed_bleu4_brevity_penalty_uses_plus_one_lengths() -> None:
    # "the cat" vs "the cat sat": 1-grams 2/2, 2-grams (1+1)/(1+1), 3- and 4-grams (0+1)/(0+1),
    # so every precision is 1; BP = 1 - (3+1)/(2+1) = -1/3 in log space (standard BLEU: -1/2).
    assert sentence_smoothed_bleu4("the cat", "the cat sat") == pytest.approx(math.exp(-1 / 3))


def test_smoothed_bleu4_lowercases_and_splits_punctuation() -> None:
    # "Returns the sum." -> returns the sum . (4 tokens) vs returns the sum (3 tokens):
    # 3/4, (2+1)/(3+1), (1+1)/(2+1), (0+1)/(1+1) -> 3/16; the reference is shorter, BP log 0.
    expected = (3 / 16) ** 0.25
    assert sentence_smoothed_bleu4("Returns the sum.", "returns the sum") == pytest.approx(expected)


def test_smoothed_bleu4_is_the_mean_of_sentence_scores_times_100() -> None:
    expected = 100 * ((1 / 18) ** 0.25 + math.exp(-1 / 3)) / 2
    assert smoothed_bleu4([HYP, "the cat"], [REF, "the cat sat"]) == pytest.approx(expected)


def test_smoothed_bleu4_without_unigram_matches_is_vanishingly_small() -> None:
    # 3 vs 4 tokens, nothing shared. 1-grams: log(0 + tiny) - log 3, with tiny the smallest
    # float, as in the original; 2-grams log(1/3); 3-grams log(1/2); 4-grams: no candidate
    # 4-gram, log(1/1) = 0. BP = 1 - (4+1)/(3+1) = -1/4.
    tiny = sys.float_info.min
    expected = math.exp((math.log(tiny) - 2 * math.log(3) - math.log(2)) / 4 - 0.25)
    score = sentence_smoothed_bleu4("alpha beta gamma", "one two three four")
    assert score == pytest.approx(expected) and score < 1e-70


def test_exact_match_normalises_whitespace_only() -> None:
    predictions = ["int  x =\n1;", "int y = 2;", "Int x = 1;"]
    references = ["int x = 1;", "int y = 3;", "int x = 1;"]
    assert exact_match(predictions, references) == pytest.approx(100 / 3)


@pytest.mark.parametrize("metric", [corpus_bleu4, smoothed_bleu4, exact_match])
def test_misaligned_or_empty_inputs_are_rejected(metric) -> None:
    with pytest.raises(ValueError):
        metric(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        metric([], [])
