"""Personalised mixtures over each client's top-m peers: K·(m + 1)·D work instead of K²·D.

The similarity-weighted rule (in the spirit of FedAMP, Huang et al. 2021,
https://arxiv.org/abs/2007.03797; ``docs/ALGORITHMS.md``) gives client i

    θ'_i = (1 − λ)·θ̄ + λ·Σ_j W_ij θ_j,     θ̄ = Σ_j p_j θ_j (the FedAvg mean),

with W row-stochastic over all K clients: a K×K by K×D product, K²·D multiply-adds (2.4·10¹³
at K = 1000 and the bundled D = 2.44 M, hours on two cores). Issue 13 keeps, in each row of W,
the client itself and its m largest peer weights, drops the rest and renormalises what is kept
to sum to 1 (``top_peers``):

    W̃_ij = W_ij / Σ_{l ∈ N_i} W_il  for j ∈ N_i = {i} ∪ top_m{W_ij : j ≠ i},  0 elsewhere.

The mixture then reads m + 1 rows per client: K·(m + 1)·D. What is dropped is the peers'
smallest weights, so the rule changes least where W is concentrated (softmax weights of a few
similar peers) and most where it is flat. m ≥ K − 1 keeps every peer: the dense rule, up to
float rounding. Ties between equal peer weights keep the lower column index.

Every output element is a fixed sequence of float64 multiplies and adds, (1 − λ)·θ̄ first and
then the kept peers in ascending column order, so the result is bit-reproducible for rows in a
fixed order whatever the memory layout (``strategies.maths.reproducible``). Work proceeds in
column blocks of about a million values, so the only K×D array is the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strategies.maths.reproducible import aligned_empty, is_aligned

BLOCK_VALUES = 1 << 20  # K x columns per block: 8 MiB of float64 accumulator


@dataclass(frozen=True)
class SparseWeights:
    """Row i mixes ``columns[i]`` (ascending, i itself included) with ``weights[i]`` (sum 1)."""

    columns: np.ndarray  # K x n int64
    weights: np.ndarray  # K x n float64


def top_peers(W: np.ndarray, m: int) -> SparseWeights:
    """Keep each client and its ``m`` largest peer weights of the row-stochastic K×K ``W``,
    renormalised to sum to 1. A row whose kept weights are all 0 (self weight 0 and m = 0)
    keeps its own adapter: weight 1 on itself."""
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1] or W.shape[0] == 0:
        raise ValueError(f"W must be square and non-empty, got shape {W.shape}")
    if not np.all(np.isfinite(W)) or np.any(W < 0):
        raise ValueError("W must be finite and non-negative")
    if m < 0:
        raise ValueError(f"m must be >= 0, got {m}")
    K = W.shape[0]
    n = min(m, K - 1) + 1
    peers = W.copy()
    np.fill_diagonal(peers, -np.inf)  # the client itself is always kept, never a peer
    # A stable sort of -W orders equal weights by column: ties keep the lower index.
    order = np.argsort(-peers, axis=1, kind="stable")[:, : n - 1]
    columns = np.sort(np.concatenate([np.arange(K)[:, None], order], axis=1), axis=1)
    kept = np.take_along_axis(W, columns, axis=1)
    total = kept.sum(axis=1, keepdims=True)
    alone = (total[:, 0] == 0.0).nonzero()[0]
    kept[alone] = (columns[alone] == alone[:, None]).astype(np.float64)
    total[alone] = 1.0
    return SparseWeights(columns.astype(np.int64), kept / total)


def sparse_mixtures(
    thetas: np.ndarray,
    sparse: SparseWeights,
    mean: np.ndarray,
    lam: float,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Row i = (1 − λ)·mean + λ·Σ_t weights[i, t]·thetas[columns[i, t]], in ``thetas``' dtype.

    ``mean`` (D,) is the FedAvg mean θ̄ the server also returns as the round's global adapter.
    ``out``: an aligned K×D buffer of ``thetas``' dtype to write into (last round's, so that no
    fresh gigabytes are faulted in), or None for a new one.
    """
    thetas = np.asarray(thetas)
    if thetas.ndim != 2:
        raise ValueError(f"thetas must be K×D, got shape {thetas.shape}")
    K, D = thetas.shape
    columns, weights = sparse.columns, np.asarray(sparse.weights, np.float64)
    if columns.shape != weights.shape or columns.shape[0] != K:
        raise ValueError(f"sparse weights {columns.shape} do not match {K} clients")
    if columns.size and (columns.min() < 0 or columns.max() >= K):
        raise ValueError(f"peer columns must lie in [0, {K})")
    if np.shape(mean) != (D,):
        raise ValueError(f"mean must have shape ({D},), got {np.shape(mean)}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if out is None:
        out = aligned_empty((K, D), thetas.dtype)
    elif out.shape != (K, D) or out.dtype != thetas.dtype or not is_aligned(out):
        raise ValueError(f"out must be an aligned {(K, D)} {thetas.dtype} array")
    if lam == 0.0:
        out[...] = mean[None, :]  # exactly FedAvg
        return out
    scaled = lam * weights  # K x n: λ·W̃_it
    width = max(1, BLOCK_VALUES // K)
    acc = np.empty((K, min(width, D)), np.float64)
    term = np.empty_like(acc)
    for start in range(0, D, width):
        stop = min(start + width, D)
        a, tmp = acc[:, : stop - start], term[:, : stop - start]
        a[...] = np.asarray(mean[start:stop], np.float64)[None, :] * (1.0 - lam)
        block = thetas[:, start:stop]
        for t in range(columns.shape[1]):
            # float64 products of float32 values are exact; the sum order is fixed by t.
            np.multiply(block[columns[:, t]], scaled[:, t, None], out=tmp)
            a += tmp
        out[:, start:stop] = a
    return out
