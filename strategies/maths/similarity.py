"""Task-similarity-aware aggregation: cosine similarity of client updates, softmax mixing, clusters.

fedcolora's own aggregation, in the spirit of FedAMP (Huang et al. 2021,
https://arxiv.org/abs/2007.03797: each client gets its own attention-weighted mixture of peers)
and Clustered FL (Sattler et al. 2020, https://arxiv.org/abs/1910.01991: split clients whose
updates point in different directions). Δ_k is client k's flattened update of the shared adapter.

    S_ij = cos(Δ_i, Δ_j)                       (K×K)
    W_ij = softmax_j(S_ij / τ)                 (j = i included)
    θ'_i = (1 − λ)·Σ_j p_j θ_j + λ·Σ_j W_ij θ_j   (λ = 0 is fedavg)

Clusters come from complete linkage on 1 − S, or spectral clustering with k from the eigengap.
Both need individual updates, so neither can run under secure aggregation. Every reduction is
bit-reproducible for rows in a fixed order (``strategies.maths.reproducible``).
"""

from __future__ import annotations

import numpy as np

from strategies.maths.averaging import normalized_weights
from strategies.maths.cluster_tools import farthest_point_kmeans
from strategies.maths.reproducible import (
    aligned_copy,
    aligned_empty,
    aligned_gram,
    aligned_matmul,
    sum_of_squares,
    weighted_row_sum,
)


def _compute_dtype(x: np.ndarray) -> np.dtype:
    # float32 (and half, upcast) stay float32: the mixtures cost K²·D flops, which for
    # K=100 clients and D=2.4M parameters is 4.8e10 and twice as fast in single precision.
    return np.dtype(np.float32) if x.dtype.itemsize <= 4 and x.dtype.kind == "f" else np.float64


def _square(S: np.ndarray) -> np.ndarray:
    S = np.asarray(S, dtype=np.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1] or S.shape[0] == 0:
        raise ValueError(f"similarity matrix must be square and non-empty, got shape {S.shape}")
    if not np.all(np.isfinite(S)):
        raise ValueError("similarity matrix contains NaN or Inf")
    return (S + S.T) / 2


def cosine_matrix(deltas: np.ndarray) -> np.ndarray:
    """K×D updates -> K×K cosines (float64); a zero row gets 0 with others and 1 with itself.

    The rows may be count sketches of the updates (``strategies.maths.sketch``), which gives
    the sketch's cosines. The Gram matrix is a float64 product of aligned copies, so the same
    rows give the same bits in any memory layout (``maths.reproducible``).
    """
    x = np.asarray(deltas)
    if x.ndim != 2:
        raise ValueError(f"deltas must be K×D, got shape {x.shape}")
    gram = aligned_gram(x, np.float64)
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    denominator = np.outer(norms, norms)
    S = np.divide(gram, denominator, out=np.zeros_like(gram), where=denominator > 0)
    S = np.clip((S + S.T) / 2, -1.0, 1.0)
    np.fill_diagonal(S, 1.0)
    return S


def mixing_weights(S: np.ndarray, tau: float = 0.5) -> np.ndarray:
    """Row-wise softmax_j(S_ij / τ), including j = i; every row sums to 1."""
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    logits = _square(S) / tau
    # Subtracting the row maximum leaves the softmax unchanged and keeps exp() from overflowing.
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def peer_weights(S: np.ndarray, self_weight: float, tau: float = 1.0) -> np.ndarray:
    """W with W_ii = β and W_ij = (1 − β)·softmax_{j≠i}(z_ij / τ) over the peers j ≠ i.

    docs/ALGORITHMS.md (task-similarity-aware aggregation, steps 2–3; issue 11): S_ii = 1 inside the
    softmax swamps every peer, so the self weight β is its own parameter, and each row's peer
    similarities are standardised first, z_ij = (S_ij − μ_i) / σ_i with the mean and
    (population) standard deviation over j ≠ i, so τ is in units of that row's spread: the rule
    adapts to how different the tasks are (the same τ separates 0.6 from 0.1 as well as 0.30
    from 0.25). A row whose peers are all equally similar (σ_i = 0) spreads 1 − β evenly; a
    lone client (K = 1) gets W = [[1]]. Every row sums to 1.
    """
    if not 0.0 <= self_weight <= 1.0:
        raise ValueError(f"self_weight must be in [0, 1], got {self_weight}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    S = _square(S)
    K = S.shape[0]
    if K == 1:
        return np.ones((1, 1))
    peers = ~np.eye(K, dtype=bool)
    off = S[peers].reshape(K, K - 1)  # row i: S_ij for j ≠ i, in j order
    spread = off.std(axis=1, keepdims=True)
    z = np.divide(
        off - off.mean(axis=1, keepdims=True),
        spread,
        out=np.zeros_like(off),
        where=spread > 0,
    )
    logits = z / tau
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    W = np.diag(np.full(K, float(self_weight)))
    W[peers] = ((1.0 - self_weight) * e / e.sum(axis=1, keepdims=True)).ravel()
    return W


def personalized_mixtures(
    thetas: np.ndarray, W: np.ndarray, p: np.ndarray, lam: float, out: np.ndarray | None = None
) -> np.ndarray:
    """Row i = (1 − λ)·Σ_j p_j θ_j + λ·Σ_j W_ij θ_j for K×D parameters ``thetas``.

    ``out``: an aligned K×D buffer to write into (last round's, so that no fresh gigabyte has
    to be faulted in), or None for a new one.
    """
    thetas = np.asarray(thetas)
    if thetas.ndim != 2:
        raise ValueError(f"thetas must be K×D, got shape {thetas.shape}")
    K = thetas.shape[0]
    W = np.asarray(W, dtype=np.float64)
    if W.shape != (K, K):
        raise ValueError(f"W must be {K}×{K} for {K} clients, got shape {W.shape}")
    if np.any(W < 0) or not np.allclose(W.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("each row of W must be non-negative and sum to 1")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if len(p) != K:
        raise ValueError(f"got {len(p)} weights for {K} clients")
    weights = normalized_weights(p)
    dtype = _compute_dtype(thetas)
    if lam == 0.0:
        # Exactly fedavg: one global mean repeated, not K matmul rows that could round apart.
        out = aligned_empty(thetas.shape, dtype) if out is None else out
        out[...] = weighted_row_sum(thetas, weights, dtype)[None, :]
        return out
    mix = (1.0 - lam) * weights[None, :] + lam * W  # K×K: the coefficients of every mixture
    # K²·D flops rule out element-wise sums; aligned operands fix the BLAS kernel instead.
    return aligned_matmul(mix, thetas, dtype, out=out)


def assign_to_nearest(delta: np.ndarray, centroids: np.ndarray) -> int:
    """Index of the centroid (C×D) most cosine-similar to ``delta`` (D,); ties go to the first."""
    delta = np.ravel(delta)
    centroids = np.atleast_2d(centroids)
    if centroids.shape[1] != delta.size or centroids.shape[0] == 0:
        raise ValueError(f"centroids {centroids.shape} do not match a delta of size {delta.size}")
    dots = np.array([_dot(centroid, delta) for centroid in centroids])
    norms = np.sqrt([sum_of_squares(c) for c in centroids]) * np.sqrt(sum_of_squares(delta))
    sims = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    return int(np.argmax(sims))


def _dot(x: np.ndarray, y: np.ndarray) -> float:
    """⟨x, y⟩ in float64 by numpy's index-ordered pairwise sum (BLAS ddot may not be)."""
    return float(np.sum(np.asarray(x, np.float64) * np.asarray(y, np.float64)))


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Rename ids to 0, 1, 2, … in order of first appearance: [5, 5, 2, 7] -> [0, 0, 1, 2]."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return np.zeros(0, dtype=np.int64)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))
    return rank[inverse.ravel()].astype(np.int64)


def complete_linkage(
    S: np.ndarray, threshold: float | None = None, k: int | None = None
) -> np.ndarray:
    """Agglomerative clustering with complete linkage on the distance 1 − S.

    Give exactly one stopping rule: ``threshold`` merges while the two closest clusters are at most
    that far apart (every pair inside a cluster is then within ``threshold``, like scipy's
    ``fcluster(..., criterion="distance")``); ``k`` merges until k clusters remain. Ties merge the
    lowest indices first. O(K³) time in NumPy, fine for the hundreds of clients of one round.
    """
    dist = 1.0 - _square(S)
    K = dist.shape[0]
    if (threshold is None) == (k is None):
        raise ValueError("give exactly one of threshold or k")
    if k is not None and not 1 <= k <= K:
        raise ValueError(f"k must be in [1, {K}], got {k}")
    np.fill_diagonal(dist, np.inf)
    labels = np.arange(K)
    clusters = K
    while clusters > 1 and (k is None or clusters > k):
        i, j = sorted(divmod(int(np.argmin(dist)), K))
        if threshold is not None and dist[i, j] > threshold:
            break
        # Complete linkage: the merged cluster is as far from c as the farther of its two parts.
        merged = np.maximum(dist[i], dist[j])
        dist[i, :], dist[:, i] = merged, merged
        dist[j, :], dist[:, j] = np.inf, np.inf
        dist[i, i] = np.inf
        labels[labels == j] = i
        clusters -= 1
    return canonical_labels(labels)


def peer_affinity(S: np.ndarray, tau: float = 0.5) -> np.ndarray:
    """Symmetric affinity (P + Pᵀ)/2 with P = ``peer_weights(S, 0, τ)``: zero diagonal, rows
    of P standardised per client, so each client's own scale of similarity is used (like the
    local scaling of self-tuning spectral clustering, Zelnik-Manor & Perona 2004)."""
    P = peer_weights(S, 0.0, tau)
    return (P + P.T) / 2


def spectral_clusters(S: np.ndarray, max_k: int | None = None, tau: float = 0.5) -> np.ndarray:
    """Spectral clustering (Ng, Jordan & Weiss 2001) with k from the eigengap heuristic.

    Affinity 𝒜 = ``peer_affinity(S, τ)``, not S itself: with raw cosines the unit diagonal and
    the all-positive off-diagonal made the eigengap pick k = 1 on the bundled model's S, whose
    same-task pairs (0.5–0.6) stood well above cross-task ones (0.05–0.2) (issue 11). The row
    standardisation makes the gap relative to each client's spread, and the zero diagonal keeps
    a client's self-similarity out, as Ng, Jordan & Weiss do.
    L = I − D^{-1/2} 𝒜 D^{-1/2}; with eigenvalues λ_1 ≤ … ≤ λ_K, k = argmax_{k ≤ max_k}
    (λ_{k+1} − λ_k), so k is at most K − 1 (default max_k = K − 1). The k smallest
    eigenvectors, row-normalised, are grouped by a deterministic farthest-point k-means.
    Identical updates give equal affinities, one eigenvalue 0 and the rest K/(K − 1): k = 1.
    """
    S = _square(S)
    K = S.shape[0]
    if K == 1:
        return np.zeros(1, dtype=np.int64)
    max_k = K - 1 if max_k is None else max_k
    if max_k < 1:
        raise ValueError(f"max_k must be >= 1, got {max_k}")
    affinity = peer_affinity(S, tau)
    # Every row of P sums to 1, so degrees are >= 1/2; the floor is only a guard.
    inv_sqrt_degree = 1.0 / np.sqrt(np.maximum(affinity.sum(axis=1), 1e-12))
    laplacian = np.eye(K) - inv_sqrt_degree[:, None] * affinity * inv_sqrt_degree[None, :]
    eigenvalues, eigenvectors = np.linalg.eigh(aligned_copy(laplacian))
    gaps = np.diff(eigenvalues)[: min(max_k, K - 1)]
    k = int(np.argmax(gaps)) + 1
    embedding = eigenvectors[:, :k]
    norms = np.linalg.norm(embedding, axis=1, keepdims=True)
    embedding = np.divide(embedding, norms, out=np.zeros_like(embedding), where=norms > 0)
    return canonical_labels(farthest_point_kmeans(embedding, k))
