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

The work is BLAS products on 64-byte-aligned operands whose shapes depend only on K, m and D
(``strategies.maths.reproducible``), so the bits are reproducible for rows in a fixed order.
θ is read in blocks of K×c columns (about ``BLOCK_VALUES`` values, copied into one aligned
buffer), from a K×D matrix or straight from the replies' arrays (``averaging.ReplyRows``: a
round then needs no K×D copy of θ, only the output). Two paths compute the same W̃, chosen by K
alone:

- K ≤ ``DENSE_PER_PEER`` · (m + 1): a K×K by K×c product per block, with W̃'s zeros in it.
  BLAS's dense product runs ~20 times more multiply-adds per second than the gathered one on
  this machine (K = 100, m = 8, D = 244,224: 0.22 s dense against 0.54 s gathered), so below
  that K the zeros cost less than the gathering. At K = 1000 the dense product would take
  ~21 s there, the gathered one took 3.5 s.
- above: sub-blocks of ``COLUMNS``; each client's m + 1 rows of the sub-block are gathered
  into an aligned K×(m + 1)×c buffer and multiplied by its weights (a batched 1×(m + 1) by
  (m + 1)×c product).

(1 − λ)·θ̄ is added element-wise after the product.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from strategies.maths.averaging import Rows, as_rows
from strategies.maths.reproducible import (
    BLOCK_VALUES,
    aligned_copy,
    aligned_empty,
    is_aligned,
    share_work,
)

DENSE_PER_PEER = 16  # dense product while K <= 16 (m + 1): see the module docstring
COLUMNS = 64  # per block: fastest of 32-256 at K = 1000, m = 8 (K x 64 float32 stays in cache)


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
    thetas: np.ndarray | Rows,
    sparse: SparseWeights,
    mean: np.ndarray,
    lam: float,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Row i = (1 − λ)·mean + λ·Σ_t weights[i, t]·thetas[columns[i, t]], in ``thetas``' dtype
    (float32 for float32 or narrower, float64 otherwise).

    ``thetas`` is a K×D matrix or ``averaging.ReplyRows`` (the replies' flat states, never
    formed whole: a round then needs no K×D buffer besides ``out``). It is read in blocks of
    K×``_block_width`` values, the same blocks whatever ``thetas`` is, so both give the same
    bits. ``mean`` (D,) is the FedAvg mean θ̄ the server also returns as the round's global
    adapter. ``out``: an aligned K×D buffer of that dtype to write into (last round's, so that
    no fresh gigabytes are faulted in), or None for a new one.
    """
    rows = as_rows(thetas)
    K, D = rows.shape
    columns, weights = sparse.columns, np.asarray(sparse.weights, np.float64)
    if columns.shape != weights.shape or columns.shape[0] != K:
        raise ValueError(f"sparse weights {columns.shape} do not match {K} clients")
    if columns.size and (columns.min() < 0 or columns.max() >= K):
        raise ValueError(f"peer columns must lie in [0, {K})")
    if np.shape(mean) != (D,):
        raise ValueError(f"mean must have shape ({D},), got {np.shape(mean)}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    dtype = np.dtype(np.float32 if rows.dtype.itemsize <= 4 else np.float64)
    if out is None:
        out = aligned_empty((K, D), dtype)
    elif out.shape != (K, D) or out.dtype != dtype or not is_aligned(out):
        raise ValueError(f"out must be an aligned {(K, D)} {dtype} array")
    if lam == 0.0:
        out[...] = mean[None, :]  # exactly FedAvg
        return out
    dense_max = DENSE_PER_PEER * columns.shape[1]
    if rows.shape[0] <= dense_max:
        dense = np.zeros((K, K))
        np.put_along_axis(dense, columns, lam * weights, axis=1)
        _dense_products(rows, aligned_copy(dense, dtype), out)
    else:
        _gathered_products(rows, columns, lam * weights, out)
    if lam < 1.0:
        out += np.asarray((1.0 - lam) * np.asarray(mean, np.float64), dtype)[None, :]
    return out


def _block_width(K: int, D: int) -> int:
    """Columns per block read out of ``thetas``: about ``BLOCK_VALUES`` values, a multiple of
    ``COLUMNS`` (the gathered path's sub-blocks), at most D."""
    return min(D, max(COLUMNS, BLOCK_VALUES // max(K, 1) // COLUMNS * COLUMNS))


def _leading(flat: np.ndarray, K: int, columns: int) -> np.ndarray:
    """The first K·columns values of an aligned flat buffer as a C-contiguous K×columns view
    (aligned too: it starts where the buffer does)."""
    return flat[: K * columns].reshape(K, columns)


def _blocks(rows: Rows, dtype: np.dtype):
    """(start, stop, the K×(stop − start) block, aligned and C-contiguous) over the columns."""
    K, D = rows.shape
    width = _block_width(K, D)
    flat = aligned_empty(K * width, dtype)
    for start in range(0, D, width):
        stop = min(start + width, D)
        yield start, stop, rows.block(start, stop, _leading(flat, K, stop - start))


def _dense_products(rows: Rows, dense: np.ndarray, out: np.ndarray) -> None:
    """out = dense @ rows, one aligned K×K by K×c BLAS product per block.

    Blocks write disjoint columns of ``out``, so threads share them (``share_work``), each
    reading and multiplying into aligned buffers of its own: the same product on the same
    shapes and alignment whichever thread runs a block, so the same bits."""
    K, D = rows.shape
    width = _block_width(K, D)
    buffers = threading.local()

    def run(start: int) -> None:
        if not hasattr(buffers, "block"):
            buffers.block = aligned_empty(K * width, out.dtype)
            buffers.product = aligned_empty(K * width, out.dtype)
        stop = min(start + width, D)
        block = rows.block(start, stop, _leading(buffers.block, K, stop - start))
        result = _leading(buffers.product, K, stop - start)
        np.matmul(dense, block, out=result)
        out[:, start:stop] = result

    share_work(run, range(0, D, width))


def _gathered_products(
    rows: Rows, columns: np.ndarray, coefficients: np.ndarray, out: np.ndarray
) -> None:
    """out[i] = coefficients[i] @ thetas[columns[i]], one ``COLUMNS`` sub-block at a time."""
    K, n, dtype = rows.shape[0], columns.shape[1], out.dtype
    weights = aligned_copy(coefficients[:, None, :], dtype)  # K x 1 x n
    compact = aligned_empty((K, COLUMNS), dtype)
    buffers: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # width -> gathered, product
    for first, last, block in _blocks(rows, dtype):
        for start in range(0, last - first, COLUMNS):
            stop = min(start + COLUMNS, last - first)
            if stop - start not in buffers:  # the full width, and once the last block's
                buffers[stop - start] = (
                    aligned_empty((K, n, stop - start), dtype),
                    aligned_empty((K, 1, stop - start), dtype),
                )
            gathered, product = buffers[stop - start]
            # Gathering from the block's far-apart rows misses the cache (2.3x slower at
            # K = 1000): copy the sub-block out first (K x 64 float32 stays in cache).
            sub = compact[:, : stop - start]
            sub[...] = block[:, start:stop]
            np.take(sub, columns, axis=0, out=gathered)
            np.matmul(weights, gathered, out=product)
            out[:, first + start : first + stop] = product[:, 0, :]
