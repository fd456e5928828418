"""Test oracles of the exact LoRA aggregations: the dense products, computed the obvious way.

Production never forms Σ_k p_k B_k A_k densely (FLoRA stacks factors, FedEx-LoRA folds a
low-rank residual, ``strategies.maths.lora_products``); tests compare against these instead.
Averaging the factors is not averaging the update:

    Σ p_k B_k A_k − (Σ p_k B_k)(Σ p_k A_k) = Σ p_k (B_k − B̄)(A_k − Ā)

(expand the right side and use Σ p_k = 1; docs/ALGORITHMS.md, "The inexact-aggregation trap").
Arithmetic runs in float64; results come back in the inputs' floating dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _prepare(As, Bs, p) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.dtype]:
    if not len(As) == len(Bs) == len(p):
        raise ValueError(f"got {len(As)} A factors, {len(Bs)} B factors and {len(p)} weights")
    weights = np.asarray(p, dtype=np.float64) / float(np.sum(p))
    a64 = [np.asarray(a, dtype=np.float64) for a in As]
    b64 = [np.asarray(b, dtype=np.float64) for b in Bs]
    for k, (a, b) in enumerate(zip(a64, b64, strict=True)):
        if a.ndim != 2 or b.ndim != 2 or b.shape[1] != a.shape[0]:
            raise ValueError(f"client {k}: B {b.shape} @ A {a.shape} is not a LoRA product")
    dtype = np.result_type(*(np.asarray(x).dtype for x in (*As, *Bs)))
    return a64, b64, weights, dtype


def product_average(
    As: Sequence[np.ndarray], Bs: Sequence[np.ndarray], p: Sequence[float]
) -> np.ndarray:
    """The exact average Σ_k p_k B_k A_k (d_out×d_in); ranks may differ per client."""
    a64, b64, weights, dtype = _prepare(As, Bs, p)
    return sum(w * (b @ a) for w, a, b in zip(weights, a64, b64, strict=True)).astype(dtype)


def fedex_aggregate(
    As: Sequence[np.ndarray], Bs: Sequence[np.ndarray], p: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FedEx-LoRA (Singhal et al. 2024): (Ā, B̄, R) with R = Σ p_k (B_k − B̄)(A_k − Ā), the
    covariance form of Σ p_k B_k A_k − B̄Ā, so B̄Ā + R is the exact average."""
    a64, b64, weights, dtype = _prepare(As, Bs, p)
    a_bar = sum(w * a for w, a in zip(weights, a64, strict=True))
    b_bar = sum(w * b for w, b in zip(weights, b64, strict=True))
    terms = [w * ((b - b_bar) @ (a - a_bar)) for w, a, b in zip(weights, a64, b64, strict=True)]
    return a_bar.astype(dtype), b_bar.astype(dtype), sum(terms).astype(dtype)


def factor_average_error(
    As: Sequence[np.ndarray], Bs: Sequence[np.ndarray], p: Sequence[float]
) -> np.ndarray:
    """Σ_k p_k (B_k − B̄)(A_k − Ā): what FedAvg of the factors misses (= exact − B̄Ā)."""
    return fedex_aggregate(As, Bs, p)[2]
