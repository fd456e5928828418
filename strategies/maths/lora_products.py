"""The inexact-aggregation trap of federated LoRA, and the exact aggregations that avoid it.

Averaging the factors is not averaging the update:

    Σ p_k B_k A_k − (Σ p_k B_k)(Σ p_k A_k) = Σ p_k (B_k − B̄)(A_k − Ā)

(expand the right side and use Σ p_k = 1). Three exact methods are covered here:

- FedEx-LoRA (https://arxiv.org/abs/2410.09432): keep (Ā, B̄) as the next adapter and fold the
  residual s·(Σ p_k B_k A_k − B̄Ā) into the frozen base weight.
- FLoRA (https://arxiv.org/abs/2409.05976): stack A = [p_1A_1; …; p_KA_K] and B = [B_1 … B_K], so
  B·A = Σ p_k B_k A_k for any per-client ranks r_k, and merge s·B·A into the base weight.
- FFA-LoRA (https://arxiv.org/abs/2403.12313): A is frozen and identical on every client, so the
  residual above vanishes and averaging B alone is exact (nothing extra to compute here).

Shapes: A_k is r_k×d_in, B_k is d_out×r_k. Arithmetic runs in float64; results come back in the
inputs' floating dtype. Weights p are normalised with ``normalized_weights``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from strategies.maths.averaging import State, normalized_weights, split_lora_key, weighted_average
from strategies.maths.reproducible import aligned_matmul, weighted_row_sum


def lora_pairs(state: State) -> dict[str, tuple[str, str]]:
    """Module prefix -> (lora_A key, lora_B key), sorted by prefix; every A needs its B."""
    factors: dict[str, dict[str, str]] = {}
    for key in state:
        parsed = split_lora_key(key)
        if parsed is None:
            continue
        prefix, factor = parsed
        if factor in factors.setdefault(prefix, {}):
            raise ValueError(f"module '{prefix}' has two lora_{factor} keys (several adapters?)")
        factors[prefix][factor] = key
    for prefix, found in factors.items():
        if set(found) != {"A", "B"}:
            present, missing = ("A", "B") if "A" in found else ("B", "A")
            raise ValueError(f"module '{prefix}' has lora_{present} but no lora_{missing}")
    return {prefix: (found["A"], found["B"]) for prefix, found in sorted(factors.items())}


def _prepare(
    As: Sequence[np.ndarray], Bs: Sequence[np.ndarray], p: Sequence[float]
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.dtype]:
    """Check shapes, normalise p and return float64 copies plus the output dtype."""
    if not len(As) == len(Bs) == len(p):
        raise ValueError(f"got {len(As)} A factors, {len(Bs)} B factors and {len(p)} weights")
    weights = normalized_weights(p)
    a64 = [np.asarray(a, dtype=np.float64) for a in As]
    b64 = [np.asarray(b, dtype=np.float64) for b in Bs]
    for k, (a, b) in enumerate(zip(a64, b64, strict=True)):
        if a.ndim != 2 or b.ndim != 2 or b.shape[1] != a.shape[0]:
            raise ValueError(f"client {k}: B {b.shape} @ A {a.shape} is not a LoRA product")
        if a.shape[1] != a64[0].shape[1] or b.shape[0] != b64[0].shape[0]:
            raise ValueError(
                f"client {k}: ΔW shape {(b.shape[0], a.shape[1])} differs from "
                f"client 0's {(b64[0].shape[0], a64[0].shape[1])}"
            )
    dtype = np.result_type(*(np.asarray(x).dtype for x in (*As, *Bs)))
    return a64, b64, weights, dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def _product(b: np.ndarray, a: np.ndarray) -> np.ndarray:
    """B @ A on aligned operands in their common dtype (``maths.reproducible``)."""
    return aligned_matmul(b, a, np.result_type(b, a))


def product_average(
    As: Sequence[np.ndarray], Bs: Sequence[np.ndarray], p: Sequence[float]
) -> np.ndarray:
    """The exact average Σ_k p_k B_k A_k (d_out×d_in); ranks may differ per client."""
    a64, b64, weights, dtype = _prepare(As, Bs, p)
    total = sum(w * _product(b, a) for w, a, b in zip(weights, a64, b64, strict=True))
    return np.asarray(total).astype(dtype)


def _factor_means(
    a64: list[np.ndarray], b64: list[np.ndarray], weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    if len({a.shape for a in a64}) > 1:
        raise ValueError("averaging factors needs one rank for all clients; zero_pad_rank first")
    a_bar = weighted_row_sum([a.ravel() for a in a64], weights).reshape(a64[0].shape)
    b_bar = weighted_row_sum([b.ravel() for b in b64], weights).reshape(b64[0].shape)
    return a_bar, b_bar


def _covariance(
    a64: list[np.ndarray],
    b64: list[np.ndarray],
    weights: np.ndarray,
    a_bar: np.ndarray,
    b_bar: np.ndarray,
) -> np.ndarray:
    terms = (w * _product(b - b_bar, a - a_bar) for w, a, b in zip(weights, a64, b64, strict=True))
    return np.asarray(sum(terms))


def factor_average_error(
    As: Sequence[np.ndarray], Bs: Sequence[np.ndarray], p: Sequence[float]
) -> np.ndarray:
    """Σ_k p_k (B_k − B̄)(A_k − Ā): what fedavg of the factors misses (= exact − B̄Ā).

    Computed in the covariance form rather than as a difference of two products, which avoids
    cancellation when the error is small next to the average.
    """
    a64, b64, weights, dtype = _prepare(As, Bs, p)
    a_bar, b_bar = _factor_means(a64, b64, weights)
    return _covariance(a64, b64, weights, a_bar, b_bar).astype(dtype)


def flora_stack(
    As: Sequence[np.ndarray], Bs: Sequence[np.ndarray], p: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """FLoRA stacking: A = [p_1A_1; …; p_KA_K] (Σr_k×d_in), B = [B_1 … B_K] (d_out×Σr_k)."""
    a64, b64, weights, dtype = _prepare(As, Bs, p)
    # The weight goes on A only, so that B @ A = Σ_k B_k (p_k A_k) counts each p_k once.
    a_stacked = np.concatenate([w * a for w, a in zip(weights, a64, strict=True)], axis=0)
    b_stacked = np.concatenate(b64, axis=1)
    return a_stacked.astype(dtype), b_stacked.astype(dtype)


def fedex_aggregate(
    As: Sequence[np.ndarray], Bs: Sequence[np.ndarray], p: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FedEx-LoRA: (Ā, B̄, R) with R = Σ p_k B_k A_k − B̄Ā, so B̄Ā + R is the exact average."""
    a64, b64, weights, dtype = _prepare(As, Bs, p)
    a_bar, b_bar = _factor_means(a64, b64, weights)
    residual = _covariance(a64, b64, weights, a_bar, b_bar)
    return a_bar.astype(dtype), b_bar.astype(dtype), residual.astype(dtype)


def _module_factors(
    states: Sequence[State],
) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    """Prefix -> (A_k list, B_k list) over clients; every client must have the same modules."""
    if not states:
        raise ValueError("no client states to aggregate")
    pairs = lora_pairs(states[0])
    for index, state in enumerate(states[1:], start=1):
        if lora_pairs(state) != pairs:
            raise ValueError(f"state {index} has different LoRA modules or key names than state 0")
    return {
        prefix: ([s[a_key] for s in states], [s[b_key] for s in states])
        for prefix, (a_key, b_key) in pairs.items()
    }


def exact_delta_weights(
    states: Sequence[State], p: Sequence[float], scale: float
) -> dict[str, np.ndarray]:
    """Per module prefix, the exact merged update s·Σ_k p_k B_k A_k (d_out×d_in)."""
    return {
        prefix: scale * product_average(As, Bs, p)
        for prefix, (As, Bs) in _module_factors(states).items()
    }


def fedex_state(
    states: Sequence[State], p: Sequence[float], scale: float
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """FedEx-LoRA on whole states: (fedavg of every key, {prefix: s·R}) to fold into W0."""
    residuals = {
        prefix: scale * factor_average_error(As, Bs, p)
        for prefix, (As, Bs) in _module_factors(states).items()
    }
    return weighted_average(states, p), residuals


def flora_merge(states: Sequence[State], p: Sequence[float], scale: float) -> dict[str, np.ndarray]:
    """FLoRA on whole states: {prefix: s·B_stacked·A_stacked}; ranks may differ per client."""
    merged: dict[str, np.ndarray] = {}
    for prefix, (As, Bs) in _module_factors(states).items():
        a_stacked, b_stacked = flora_stack(As, Bs, p)
        merged[prefix] = scale * _product(b_stacked, a_stacked)
    return merged
