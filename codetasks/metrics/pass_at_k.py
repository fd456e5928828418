"""pass@k for execution-based code generation benchmarks (HumanEval, MBPP).

``pass_at_k`` is the unbiased estimator of Chen et al. (2021, arXiv 2107.03374, eq. 1):
with ``n`` samples per problem of which ``c`` pass, ``pass@k = 1 - C(n-c, k) / C(n, k)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of ``k`` samples drawn from ``n`` (``c`` correct) passes."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0  # every draw of k samples contains a correct one
    # C(n-c, k) / C(n, k) as a product of k ratios: no huge binomials, no overflow.
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_pass_at_1(results: Sequence[bool]) -> float:
    """pass@1 over problems with one greedy sample each: the fraction that passed (0-1)."""
    if not results:
        raise ValueError("no results to score")
    return sum(bool(r) for r in results) / len(results)
