"""ROUGE-L for code summarization (Lin, 2004), via Google's ``rouge-score`` package.

ROUGE-L scores the longest common subsequence (LCS) of the token sequences:
``P = LCS / len(prediction)``, ``R = LCS / len(reference)``, ``F = 2PR / (P + R)``.
``rouge-score`` lower-cases and keeps runs of ``[a-z0-9]`` as tokens, so whitespace and
punctuation separate tokens and are dropped. We report the mean sentence F-measure times 100.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from codetasks.metrics._pairs import check_pairs

if TYPE_CHECKING:
    from rouge_score.rouge_scorer import RougeScorer


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure (0-100) over prediction/reference pairs; no stemming."""
    check_pairs(predictions, references)
    scorer = _scorer()
    scores = [
        scorer.score(reference, prediction)["rougeL"].fmeasure
        for prediction, reference in zip(predictions, references, strict=True)
    ]
    return 100.0 * sum(scores) / len(scores)


@functools.cache
def _scorer() -> RougeScorer:
    # Imported on first use: rouge-score pulls in nltk and scipy.stats (~1 CPU-s), and every
    # ClientApp process imports this module while most never score a summary.
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], use_stemmer=False)
