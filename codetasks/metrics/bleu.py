"""BLEU-family and exact-match scores for code translation and code summarization.

``corpus_bleu4`` is corpus-level BLEU-4 (Papineni et al., 2002) as computed by sacrebleu
(Post, 2018) with its defaults: the ``13a`` tokenizer and ``exp`` smoothing. CodeXGLUE's
Java-to-C# translation task reports BLEU-4 and exact match.

``smoothed_bleu4`` is the sentence-level smoothed BLEU-4 that CodeXGLUE's code-to-text task
(Lu et al., 2021, arXiv 2102.04664) reports, reimplemented from the description of its
``evaluator/bleu.py`` (adapted from the MOSES ``bleu.py``, with Lin & Och 2004 smoothing):

* both texts are lower-cased, split into word and punctuation tokens, then normalised like
  NIST ``mteval-v11a``;
* n-gram precisions for n = 1..4 are clipped by the reference counts; for n > 1 one is added
  to both the matches and the candidate n-gram count (add-one smoothing);
* the brevity penalty is ``min(0, 1 - (r + 1) / (c + 1))`` in log space (note the +1s);
* each sentence gets ``exp(mean log precision + brevity penalty)``; the corpus score is the mean
  over sentences times 100.
"""

from __future__ import annotations

import math
import re
import sys
import xml.sax.saxutils
from collections import Counter
from collections.abc import Sequence

import sacrebleu

from codetasks.metrics._pairs import check_pairs

_MAX_ORDER = 4
# NIST mteval-v11a normalisation as used by CodeXGLUE: language-independent part ...
_NORMALIZE_JOIN = (
    (re.compile(r"<skipped>"), ""),  # drop "skipped" tags
    (re.compile(r"-\n"), ""),  # join end-of-line hyphenation
    (re.compile(r"\n"), " "),  # join lines
)
# ... and the Western-language part that splits punctuation off words.
_NORMALIZE_SPLIT = (
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation except ' . ,
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period/comma unless after a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # period/comma unless before a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
)
_WORD_OR_PUNCT = re.compile(r"\w+|[^\s\w]")


def corpus_bleu4(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU-4 (0-100) with sacrebleu's defaults, one reference per prediction."""
    check_pairs(predictions, references)
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Percentage (0-100) of predictions equal to their reference up to whitespace runs."""
    check_pairs(predictions, references)
    hits = sum(_squash(p) == _squash(r) for p, r in zip(predictions, references, strict=True))
    return 100.0 * hits / len(predictions)


def smoothed_bleu4(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean sentence-level smoothed BLEU-4 (0-100), as CodeXGLUE code-to-text reports it."""
    check_pairs(predictions, references)
    scores = [sentence_smoothed_bleu4(p, r) for p, r in zip(predictions, references, strict=True)]
    return 100.0 * sum(scores) / len(scores)


def sentence_smoothed_bleu4(prediction: str, reference: str) -> float:
    """Smoothed BLEU-4 of one sentence pair, in 0-1 (see the module docstring)."""
    hypothesis, gold = _codexglue_tokens(prediction), _codexglue_tokens(reference)
    hyp_counts, ref_counts = _ngram_counts(hypothesis), _ngram_counts(gold)
    log_precision = 0.0
    for order in range(1, _MAX_ORDER + 1):
        guesses = max(len(hypothesis) - order + 1, 0)
        matches = sum(
            min(count, ref_counts[ngram])
            for ngram, count in hyp_counts.items()
            if len(ngram) == order
        )
        smooth = 1 if order > 1 else 0
        # The tiny float keeps log() finite when a unigram count is zero, as in the original.
        tiny = sys.float_info.min
        log_precision += math.log(matches + smooth + tiny) - math.log(guesses + smooth + tiny)
    brevity = min(0.0, 1.0 - (len(gold) + 1) / (len(hypothesis) + 1))
    return math.exp(log_precision / _MAX_ORDER + brevity)


def _squash(text: str) -> str:
    return " ".join(text.split())


def _codexglue_tokens(text: str) -> list[str]:
    # CodeXGLUE first splits words from punctuation, then applies the NIST normalisation.
    text = " ".join(_WORD_OR_PUNCT.findall(text.strip().lower()))
    for pattern, replacement in _NORMALIZE_JOIN:
        text = pattern.sub(replacement, text)
    text = (" " + xml.sax.saxutils.unescape(text, {"&quot;": '"'}) + " ").lower()
    for pattern, replacement in _NORMALIZE_SPLIT:
        text = pattern.sub(replacement, text)
    return text.split()


def _ngram_counts(tokens: list[str]) -> Counter[tuple[str, ...]]:
    return Counter(
        tuple(tokens[start : start + order])
        for order in range(1, _MAX_ORDER + 1)
        for start in range(len(tokens) - order + 1)
    )
