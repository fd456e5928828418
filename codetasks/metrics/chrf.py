"""chrF for code summarization (Popović, 2015), as computed by sacrebleu (Post, 2018).

Corpus-level character n-gram F-score with sacrebleu's defaults: character n-grams up to 6,
no word n-grams (chrF, not chrF++), beta = 2 (recall weighted twice as much as precision),
whitespace ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import sacrebleu

from codetasks.metrics._pairs import check_pairs


def chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (0-100), one reference per prediction."""
    check_pairs(predictions, references)
    return float(sacrebleu.corpus_chrf(list(predictions), [list(references)]).score)
