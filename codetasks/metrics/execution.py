"""Execution-based scoring of code generation (MBPP, HumanEval): pass@1 of one sample each.

Each prediction runs against its example's unit tests in :mod:`codetasks.sandbox`, the way the
HumanEval harness (Chen et al., 2021, arXiv 2107.03374) and MBPP (Austin et al., 2021, arXiv
2108.07732) score completions; with one greedy sample per problem, pass@1 is the share of
problems whose program passed. Examples that cannot be scored (no tests, a lone surrogate) are
``"skipped"`` with their reason and left out of pass@1; the share of each status, and how many
tests were judged outside the sandbox or had to run inside it, are reported too.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from codetasks.examples import Example
from codetasks.metrics.pass_at_k import mean_pass_at_1
from codetasks.prompts import COMPLETION_FORMAT
from codetasks.sandbox import (
    SKIPPED,
    STATUSES,
    TESTS_IN_SANDBOX,
    TESTS_SPLIT,
    SandboxResult,
    check_generation,
)  # fmt: skip

DEFAULT_WORKERS = 2  # the evaluation machines have two cores
PASS_AT_1 = "pass@1"


def candidate_program(example: Example, prediction: str) -> str:
    """The complete program to test for ``prediction``.

    HumanEval (completion-format) examples hold the prompt, a signature and docstring, in
    ``source``; their predictions may be a whole function or only its body. A whole function
    follows the prompt, so the prompt's imports and helpers stay defined and the prediction's
    definition wins; a body is appended to the prompt, as in the original harness.
    """
    if example.meta.get("format") != COMPLETION_FORMAT or not example.entry_point:
        return prediction
    prompt = example.source
    defines_entry = re.compile(rf"^\s*def\s+{re.escape(example.entry_point)}\s*\(", re.M)
    if defines_entry.search(prediction):
        return f"{prompt.rstrip()}\n\n\n{prediction}"
    return prompt + ("" if prompt.endswith("\n") else "\n") + prediction


def run_generation(
    predictions: Sequence[str],
    examples: Sequence[Example],
    timeout_s: float = 10.0,
    workers: int = DEFAULT_WORKERS,
) -> list[SandboxResult]:
    """Sandbox results of each prediction against its example's tests, in input order."""
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions but {len(examples)} examples")

    def run(pair: tuple[str, Example]) -> SandboxResult:
        prediction, example = pair
        program = candidate_program(example, prediction)
        return check_generation(example, program, timeout_s=timeout_s)

    # Threads suffice: each run waits on a child process, which does the work.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, zip(predictions, examples, strict=True)))


def summarize(results: Sequence[SandboxResult]) -> dict[str, float]:
    """pass@1 (0-100) over the scored (not skipped) results, the share (0-100) of each status
    over all of them, and the count of tests judged outside and inside the sandbox."""
    scored = [result.passed for result in results if result.status != SKIPPED]
    statuses = Counter(result.status for result in results)
    scores = {PASS_AT_1: 100.0 * mean_pass_at_1(scored) if scored else 0.0}
    scores.update({f"pct_{s}": 100.0 * statuses[s] / max(len(results), 1) for s in STATUSES})
    scores[TESTS_SPLIT] = float(sum(result.split_tests for result in results))
    scores[TESTS_IN_SANDBOX] = float(sum(result.in_sandbox_tests for result in results))
    return scores


def score_generation(
    predictions: Sequence[str], examples: Sequence[Example], timeout_s: float = 10.0
) -> dict[str, float]:
    """:func:`summarize` of the predictions' sandbox results, and ``n``, the example count."""
    results = run_generation(predictions, examples, timeout_s=timeout_s)
    return summarize(results) | {"n": float(len(results))}
