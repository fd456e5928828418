"""Evaluation metrics of the three code tasks, keyed by task name in ``TASK_METRICS``.

* generation (MBPP, HumanEval): pass@1 from executing the tests in the sandbox
  (Chen et al., 2021, arXiv 2107.03374);
* translation (CodeXGLUE Java-to-C#): corpus BLEU-4, exact match and CodeBLEU, as reported by
  CodeXGLUE (Lu et al., 2021, arXiv 2102.04664) and CodeBLEU (Ren et al., 2020, arXiv 2009.10297);
* summarization (CodeXGLUE code-to-text, Python): CodeXGLUE's smoothed sentence BLEU-4 plus
  ROUGE-L, chrF and, where WordNet is installed, METEOR.

Every ``TASK_METRICS`` callable takes ``(predictions, examples)`` (predictions already parsed
from the model's replies, aligned with the examples) and returns ``{metric name: score}`` with
every score on a 0-100 scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from codetasks.examples import Example
from codetasks.metrics.bleu import corpus_bleu4, exact_match, smoothed_bleu4
from codetasks.metrics.chrf import chrf
from codetasks.metrics.codebleu import CodeBLEUUnavailable, codebleu_csharp
from codetasks.metrics.execution import score_generation
from codetasks.metrics.meteor import MeteorUnavailable, meteor, meteor_available
from codetasks.metrics.pass_at_k import mean_pass_at_1, pass_at_k
from codetasks.metrics.rouge import rouge_l

TaskMetric = Callable[[Sequence[str], Sequence[Example]], dict[str, float]]


def score_translation(predictions: Sequence[str], examples: Sequence[Example]) -> dict[str, float]:
    """BLEU-4, exact match and CodeBLEU (each 0-100) of C# predictions."""
    references = _references(predictions, examples)
    return {
        "bleu4": corpus_bleu4(predictions, references),
        "exact_match": exact_match(predictions, references),
        "codebleu": 100.0 * codebleu_csharp(predictions, references)["codebleu"],
    }


def score_summarization(
    predictions: Sequence[str], examples: Sequence[Example]
) -> dict[str, float]:
    """Smoothed BLEU-4, ROUGE-L, chrF and (when WordNet is available) METEOR, each 0-100."""
    references = _references(predictions, examples)
    scores = {
        "smoothed_bleu4": smoothed_bleu4(predictions, references),
        "rouge_l": rouge_l(predictions, references),
        "chrf": chrf(predictions, references),
    }
    if meteor_available():
        scores["meteor"] = meteor(predictions, references)
    return scores


def _references(predictions: Sequence[str], examples: Sequence[Example]) -> list[str]:
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions but {len(examples)} examples")
    return [example.target for example in examples]


TASK_METRICS: dict[str, TaskMetric] = {
    "generation": score_generation,
    "translation": score_translation,
    "summarization": score_summarization,
}

__all__ = [
    "TASK_METRICS",
    "CodeBLEUUnavailable",
    "MeteorUnavailable",
    "TaskMetric",
    "chrf",
    "codebleu_csharp",
    "corpus_bleu4",
    "exact_match",
    "mean_pass_at_1",
    "meteor",
    "meteor_available",
    "pass_at_k",
    "rouge_l",
    "score_generation",
    "score_summarization",
    "score_translation",
    "smoothed_bleu4",
]
