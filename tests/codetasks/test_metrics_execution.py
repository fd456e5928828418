"""Execution scoring: candidate programs, pass@1 over the sandbox, real HumanEval solutions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from codetasks.examples import Example
from codetasks.loading import load_task
from codetasks.metrics.execution import candidate_program, run_generation, score_generation

PROMPT = 'import math\n\n\ndef root(x):\n    """Square root of x."""\n'
HUMANEVAL = Example(
    task="generation",
    uid="humaneval/t",
    source=PROMPT,
    target="    return math.sqrt(x)\n",
    tests=("def check(candidate):\n    assert candidate(9) == 3\n",),
    entry_point="root",
    meta={"format": "completion"},
)
MBPP = Example(
    task="generation",
    uid="mbpp/t",
    source="Write a function to square a number.",
    target="def square(x):\n    return x * x",
    tests=("assert square(3) == 9",),
)


def test_mbpp_predictions_are_programs_as_they_are() -> None:
    assert candidate_program(MBPP, "def square(x):\n    return x ** 2") == (
        "def square(x):\n    return x ** 2"
    )


def test_humaneval_body_is_appended_to_the_prompt() -> None:
    assert candidate_program(HUMANEVAL, "    return math.sqrt(x)\n") == (
        PROMPT + "    return math.sqrt(x)\n"
    )


def test_humaneval_full_function_follows_the_prompt() -> None:
    full = "def root(x):\n    return math.sqrt(x)"
    assert candidate_program(HUMANEVAL, full) == PROMPT.rstrip() + "\n\n\n" + full


def test_score_generation_counts_each_outcome() -> None:
    predictions = [
        "    return math.sqrt(x)\n",  # body completion using the prompt's import: passes
        "def root(x):\n    return x ** 0.5",  # whole function: passes
        "def square(x):\n    return x + x",  # wrong: fails
        "def square(x):\n    while True:\n        pass",  # hangs: times out
    ]
    examples = [HUMANEVAL, HUMANEVAL, MBPP, MBPP]
    scores = score_generation(predictions, examples, timeout_s=1.0)
    assert scores == {
        "pass@1": 50.0,
        "pct_passed": 50.0,
        "pct_failed": 25.0,
        "pct_timeout": 25.0,
        "pct_error": 0.0,
        "pct_skipped": 0.0,
        "sandbox-tests-split": 4.0,  # each example's one assert, judged outside the sandbox
        "sandbox-tests-in-sandbox": 0.0,
        "n": 4.0,
    }


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        (Example(task="generation", uid="mbpp/empty", source="s", target="t"),
         "no tests to execute"),
        (dataclasses.replace(MBPP, uid="mbpp/lone", tests=("assert square(3) == '\ud800'",)),
         "test 1 holds a lone surrogate (U+D800) at character 21"),
    ],
)  # fmt: skip
def test_an_unscorable_example_is_skipped_with_its_reason_not_the_batch(broken, reason) -> None:
    examples = [MBPP, broken, MBPP]
    predictions = [MBPP.target, "def square(x):\n    return 0", "def square(x):\n    return 0"]
    results = run_generation(predictions, examples)
    assert [r.status for r in results] == ["passed", "skipped", "failed"]
    assert results[1].detail == f"{broken.uid}: {reason}"
    scores = score_generation(predictions, examples)
    assert (scores["pass@1"], scores["pct_skipped"], scores["n"]) == (50.0, 100 / 3, 3.0)


def test_misaligned_inputs_are_rejected() -> None:
    with pytest.raises(ValueError):
        run_generation(["x"], [MBPP, MBPP])


def test_canonical_humaneval_solutions_pass_and_wrong_ones_fail() -> None:
    examples = load_task("generation", "test", source="humaneval", limit=12)
    results = run_generation([e.target for e in examples], examples)
    assert [r.status for r in results] == ["passed"] * 12
    wrong = run_generation(["    return None\n"] * 12, examples)
    assert not any(r.passed for r in wrong)


def test_canonical_mbpp_solutions_pass(data_root: Path) -> None:
    examples = load_task("generation", "valid", data_root=data_root, limit=10)
    assert score_generation([e.target for e in examples], examples)["pass@1"] == 100.0


@pytest.mark.slow
@pytest.mark.parametrize("split", ["train", "valid"])
def test_all_canonical_mbpp_solutions_pass(data_root: Path, split: str) -> None:
    examples = load_task("generation", split, data_root=data_root)
    results = run_generation([e.target for e in examples], examples)
    failures = {e.uid: r.detail for e, r in zip(examples, results, strict=True) if not r.passed}
    assert failures == {}


@pytest.mark.slow
def test_all_canonical_humaneval_solutions_pass() -> None:
    examples = load_task("generation", "test", source="humaneval")
    assert len(examples) == 164
    results = run_generation([e.target for e in examples], examples)
    failures = {e.uid: r.detail for e, r in zip(examples, results, strict=True) if not r.passed}
    assert failures == {}
