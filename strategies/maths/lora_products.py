"""The exact aggregations of federated LoRA, as low-rank factors (docs/ALGORITHMS.md).

Averaging the factors is not averaging the update:

    Σ p_k B_k A_k − (Σ p_k B_k)(Σ p_k A_k) = Σ p_k (B_k − B̄)(A_k − Ā)

(expand the right side and use Σ p_k = 1). The exact methods never form a dense product here;
they hand factors to the frozen merged term (``strategies.merged_term``):

- FLoRA (https://arxiv.org/abs/2409.05976): stack A = [p_1A_1; …; p_KA_K] and B = [B_1 … B_K], so
  B·A = Σ p_k B_k A_k for any per-client ranks r_k (:func:`stacked_factors`).
- FedEx-LoRA (https://arxiv.org/abs/2410.09432): keep (Ā, B̄) as the next adapter and fold the
  residual Σ p_k B_k A_k − B̄Ā = [B_1 … B_K, B̄]·[p_1A_1; …; p_KA_K; −Ā] (:func:`residual_factors`).
- FFA-LoRA (https://arxiv.org/abs/2403.12313): A is frozen and identical on every client, so the
  residual above vanishes and averaging B alone is exact (nothing extra to compute here).

Shapes: A_k is r_k×d_in, B_k is d_out×r_k. Stacking runs in float64; results come back in the
inputs' floating dtype. Weights p are normalised with ``normalized_weights``. The dense
products the tests compare against are in ``tests/strategies/lora_oracles.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from colora.keys import State, split_lora_key
from strategies.maths.averaging import normalized_weights
from strategies.maths.reproducible import aligned_empty

Factors = tuple[np.ndarray, np.ndarray]  # (B d_out x q, A q x d_in) of one layer


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


def _check(
    As: Sequence[np.ndarray], Bs: Sequence[np.ndarray], p: Sequence[float]
) -> tuple[np.ndarray, np.dtype]:
    """Check shapes; (the normalised weights, the output dtype: the inputs' floating dtype)."""
    if not len(As) == len(Bs) == len(p):
        raise ValueError(f"got {len(As)} A factors, {len(Bs)} B factors and {len(p)} weights")
    weights = normalized_weights(p)
    for k, (a, b) in enumerate(zip(As, Bs, strict=True)):
        if np.ndim(a) != 2 or np.ndim(b) != 2 or np.shape(b)[1] != np.shape(a)[0]:
            raise ValueError(f"client {k}: B {np.shape(b)} @ A {np.shape(a)} is not a LoRA product")
        if np.shape(a)[1] != np.shape(As[0])[1] or np.shape(b)[0] != np.shape(Bs[0])[0]:
            raise ValueError(
                f"client {k}: ΔW shape {(np.shape(b)[0], np.shape(a)[1])} differs from "
                f"client 0's {(np.shape(Bs[0])[0], np.shape(As[0])[1])}"
            )
    dtype = np.result_type(*(np.asarray(x).dtype for x in (*As, *Bs)))
    return weights, dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def _stack(
    As: Sequence[np.ndarray],
    Bs: Sequence[np.ndarray],
    p: Sequence[float],
    tail: Factors | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """[p_1A_1; …; p_KA_K; A_t] and [B_1 … B_K B_t], written straight into 64-byte-aligned
    buffers of the output dtype (the merged term's product then copies nothing). Each p_k A_k
    is computed in float64 and rounded once, as ``float64(p_k) * A_k`` cast to the dtype."""
    weights, dtype = _check(As, Bs, p)
    ranks = [np.shape(a)[0] for a in As] + ([np.shape(tail[1])[0]] if tail is not None else [])
    a_out = aligned_empty((sum(ranks), np.shape(As[0])[1]), dtype)
    b_out = aligned_empty((np.shape(Bs[0])[0], sum(ranks)), dtype)
    start = 0
    for w, a, b in zip(weights, As, Bs, strict=True):
        rows = slice(start, start + np.shape(a)[0])
        # The weight goes on A only, so that B @ A = Σ_k B_k (p_k A_k) counts each p_k once.
        np.multiply(np.asarray(a, np.float64), np.float64(w), out=a_out[rows], casting="unsafe")
        b_out[:, rows] = b
        start = rows.stop
    if tail is not None:
        b_out[:, start:], a_out[start:] = tail
    return a_out, b_out


def flora_stack(
    As: Sequence[np.ndarray], Bs: Sequence[np.ndarray], p: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """FLoRA stacking: A = [p_1A_1; …; p_KA_K] (Σr_k×d_in), B = [B_1 … B_K] (d_out×Σr_k)."""
    return _stack(As, Bs, p)


def stacked_factors(states: Sequence[State], weights: Sequence[float]) -> dict[str, Factors]:
    """FLoRA stacking per layer: B = [B_1 ... B_K], A = [p_1 A_1; ...; p_K A_K], so that
    B @ A = sum_k p_k B_k A_k for any per-client ranks (:func:`flora_stack`)."""
    out = {}
    for layer, (a_key, b_key) in lora_pairs(states[0]).items():
        a, b = flora_stack([s[a_key] for s in states], [s[b_key] for s in states], weights)
        out[layer] = (b, a)
    return out


def residual_factors(
    states: Sequence[State], weights: Sequence[float], mean: Mapping[str, np.ndarray]
) -> dict[str, Factors]:
    """FedEx-LoRA, per layer: factors whose product is sum_k p_k B_k A_k - B_bar A_bar, with
    ``mean`` the factor means (B_bar, A_bar): the stacking above with one more block."""
    out = {}
    for layer, (a_key, b_key) in lora_pairs(mean).items():
        a, b = _stack(
            [s[a_key] for s in states],
            [s[b_key] for s in states],
            weights,
            tail=(mean[b_key], -np.asarray(mean[a_key])),
        )
        out[layer] = (b, a)
    return out
