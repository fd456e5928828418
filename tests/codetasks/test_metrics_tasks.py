"""TASK_METRICS: one scoring callable per task, every score on a 0-100 scale."""

from __future__ import annotations

from pathlib import Path

import pytest

from codetasks.examples import TASK_NAMES, Example
from codetasks.loading import load_task
from codetasks.metrics import TASK_METRICS, meteor_available

CSHARP = "public int Add(int a, int b) { int sum = a + b; return sum; }"
SUMMARY = "the cat sat on the mat"


def _examples(task: str, targets: list[str]) -> list[Example]:
    return [Example(task=task, uid=f"t/{i}", source="s", target=t) for i, t in enumerate(targets)]


def test_every_task_has_metrics() -> None:
    assert set(TASK_METRICS) == set(TASK_NAMES)


def test_translation_of_the_reference_scores_100() -> None:
    scores = TASK_METRICS["translation"]([CSHARP], _examples("translation", [CSHARP]))
    assert scores == pytest.approx({"bleu4": 100.0, "exact_match": 100.0, "codebleu": 100.0})


def test_translation_of_other_code_scores_lower() -> None:
    other = "public void Print(string message) { Console.WriteLine(message); }"
    scores = TASK_METRICS["translation"]([other], _examples("translation", [CSHARP]))
    assert scores["exact_match"] == 0.0
    assert scores["bleu4"] < 10 and scores["codebleu"] < 50


def test_summarization_of_the_reference() -> None:
    scores = TASK_METRICS["summarization"]([SUMMARY], _examples("summarization", [SUMMARY]))
    expected = {"smoothed_bleu4": 100.0, "rouge_l": 100.0, "chrf": 100.0}
    if meteor_available():
        expected["meteor"] = 100 * (1 - 1 / 432)  # one chunk of six matches
    assert scores == pytest.approx(expected)


def test_generation_runs_the_tests() -> None:
    example = Example(
        task="generation", uid="mbpp/t", source="s", target="t", tests=("assert f() == 1",)
    )
    scores = TASK_METRICS["generation"](["def f():\n    return 1"], [example])
    assert scores["pass@1"] == 100.0


def test_misaligned_inputs_are_rejected() -> None:
    with pytest.raises(ValueError):
        TASK_METRICS["summarization"](["a", "b"], _examples("summarization", ["a"]))


def test_translation_metrics_on_codexglue_java_to_csharp(data_root: Path) -> None:
    examples = load_task("translation", "valid", data_root=data_root, limit=20)
    references = [example.target for example in examples]
    perfect = TASK_METRICS["translation"](references, examples)
    assert perfect == pytest.approx({"bleu4": 100.0, "exact_match": 100.0, "codebleu": 100.0})
    # The untranslated Java shares much with the C#, but is not it.
    java = TASK_METRICS["translation"]([example.source for example in examples], examples)
    assert java["exact_match"] < 100.0
    assert 10.0 < java["bleu4"] < 100.0 and 10.0 < java["codebleu"] < 100.0
