"""Robust aggregation of client updates: norm clipping, coordinate-wise median, trimmed mean.

- Coordinate-wise median and trimmed mean: Yin et al. 2018, "Byzantine-Robust Distributed
  Learning: Towards Optimal Statistical Rates", https://arxiv.org/abs/1803.01498. A plain mean can
  be moved arbitrarily far by one client; the median and the β-trimmed mean of every coordinate
  stay within the range of the honest values as long as fewer than half (resp. a β fraction) of
  the clients misbehave.
- Norm clipping: Sun et al. 2019, "Can You Really Backdoor Federated Learning?",
  https://arxiv.org/abs/1911.07963. Scaling each update to norm ≤ M bounds how far any one client
  can move the mean.

``deltas`` is K×D: one flattened update per client (see ``averaging.flatten_state``). Results keep
the input's floating dtype. ``robust_aggregate`` chains the two steps: clip every row, then take
the coordinate-wise median or trimmed mean.
"""

from __future__ import annotations

import numpy as np


def _as_float(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


def _check_stack(deltas: np.ndarray) -> np.ndarray:
    deltas = _as_float(deltas)
    if deltas.ndim != 2 or deltas.shape[0] == 0:
        raise ValueError(f"deltas must be K×D with K >= 1, got shape {deltas.shape}")
    return deltas


def clip_by_norm(delta: np.ndarray, max_norm: float) -> np.ndarray:
    """``delta`` scaled by min(1, max_norm / ‖delta‖₂); the direction never changes."""
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    delta = _as_float(delta)
    norm = float(np.linalg.norm(delta.ravel().astype(np.float64)))
    if norm <= max_norm:
        return delta.copy()
    return (delta * (max_norm / norm)).astype(delta.dtype)


def coordinate_median(deltas: np.ndarray) -> np.ndarray:
    """The median of every coordinate over the K clients (D,); even K averages the middle two."""
    deltas = _check_stack(deltas)
    return np.median(deltas, axis=0).astype(deltas.dtype)


def trimmed_mean(deltas: np.ndarray, trim_fraction: float) -> np.ndarray:
    """Per coordinate, drop the ⌊β·K⌋ largest and ⌊β·K⌋ smallest values, then average the rest.

    β = ``trim_fraction`` ∈ [0, 0.5); β = 0 is the plain mean.
    """
    if not 0.0 <= trim_fraction < 0.5:
        raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
    deltas = _check_stack(deltas)
    K = deltas.shape[0]
    cut = int(np.floor(trim_fraction * K))
    if cut == 0:
        return deltas.mean(axis=0, dtype=np.float64).astype(deltas.dtype)
    # partition (O(K·D)) puts the `cut` smallest first and the `cut` largest last per column.
    ordered = np.partition(deltas, (cut, K - cut - 1), axis=0)
    kept = ordered[cut : K - cut]
    return kept.mean(axis=0, dtype=np.float64).astype(deltas.dtype)


RULES = ("median", "trimmed-mean")


def row_norms(deltas: np.ndarray) -> np.ndarray:
    """‖deltas[k]‖₂ for every row, accumulated in float64 (K,); one row is upcast at a time."""
    deltas = _check_stack(deltas)
    return np.array([np.linalg.norm(row.astype(np.float64)) for row in deltas])


def clip_updates(
    deltas: np.ndarray, clip_norm: float = 0.0, *, in_place: bool = False
) -> tuple[np.ndarray, float, int]:
    """Clip every row to norm ≤ M; returns (clipped K×D, M, number of rows that were clipped).

    ``clip_norm`` > 0 is a fixed M. ``clip_norm`` = 0 is adaptive: M = the median of this
    round's row norms. The median is set by the honest majority whenever fewer than half of the
    rows misbehave, so no row can end up longer than some honest update, and it is scale-free:
    multiplying every update by c multiplies M by c, so no bound has to be tuned to the
    learning rate, step count or model. (Tracking a quantile of update norms is also how
    adaptive clipping works in Andrew et al. 2021, https://arxiv.org/abs/1905.03871.)
    M = 0 (the median update is exactly zero) zeroes every non-zero row.

    ``in_place`` clips the rows of ``deltas`` itself (when it is already floating) instead of a
    copy, which saves a K×D buffer.
    """
    if not clip_norm >= 0:
        raise ValueError(f"clip_norm must be >= 0, got {clip_norm}")
    deltas = _check_stack(deltas)
    norms = row_norms(deltas)
    bound = float(clip_norm) if clip_norm > 0 else float(np.median(norms))
    out = deltas if in_place else deltas.copy()
    clipped = 0
    for k, norm in enumerate(norms):
        if norm > bound:  # the norm is known: scale directly rather than via clip_by_norm
            out[k] = out[k] * (bound / norm) if bound > 0 else 0
            clipped += 1
    return out, bound, clipped


def robust_aggregate(
    deltas: np.ndarray,
    rule: str,
    trim_fraction: float = 0.0,
    clip_norm: float = 0.0,
    *,
    in_place: bool = False,
) -> tuple[np.ndarray, float, int]:
    """``clip_updates`` then ``coordinate_median`` or ``trimmed_mean`` (``rule`` ∈ ``RULES``).

    Returns (aggregate (D,), the clip bound M used, number of clipped rows). Rows are unweighted:
    weighting by a client's reported example count would let one client buy influence.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if not 0.0 <= trim_fraction < 0.5:  # checked before ``in_place`` touches anything
        raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
    clipped, bound, count = clip_updates(deltas, clip_norm, in_place=in_place)
    if rule == "median":
        return coordinate_median(clipped), bound, count
    return trimmed_mean(clipped, trim_fraction), bound, count
