"""NumPy building blocks for ``similarity``: a deterministic k-means and an optimal assignment.

They stand in for scikit-learn's ``KMeans`` and scipy's ``linear_sum_assignment`` so that the
aggregation maths depends on NumPy alone. Both work on the tiny inputs of one federated round
(K clients, a handful of clusters), not on model-sized data.

- k-means: Lloyd's algorithm (Lloyd 1982) seeded by farthest-point traversal (Gonzalez 1985),
  which needs no random generator, so spectral clustering gives the same clusters every run.
- assignment: the Hungarian algorithm (Kuhn 1955; Munkres 1957) in the O(n³) potentials form,
  https://en.wikipedia.org/wiki/Hungarian_algorithm.
"""

from __future__ import annotations

import numpy as np


def farthest_point_kmeans(points: np.ndarray, k: int, iterations: int = 100) -> np.ndarray:
    """Cluster the rows of ``points`` (N×d) into k groups; returns one label in [0, k) per row.

    Seeds: row 0, then repeatedly the row farthest from every seed so far (ties: lowest index).
    """
    points = np.asarray(points, dtype=np.float64)
    if not 1 <= k <= len(points):
        raise ValueError(f"k must be in [1, {len(points)}], got {k}")
    centers = points[[0]]
    for _ in range(1, k):
        nearest = _squared_distances(points, centers).min(axis=1)
        centers = np.vstack([centers, points[int(np.argmax(nearest))]])
    labels = np.zeros(len(points), dtype=np.int64)
    for _ in range(iterations):
        labels = _squared_distances(points, centers).argmin(axis=1)
        # An emptied cluster keeps its old centre rather than becoming NaN.
        updated = np.array(
            [
                points[labels == c].mean(axis=0) if np.any(labels == c) else centers[c]
                for c in range(k)
            ]
        )
        if np.allclose(updated, centers):
            break
        centers = updated
    return labels


def _squared_distances(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return ((points[:, None, :] - centers[None, :, :]) ** 2).sum(axis=-1)


def min_cost_assignment(cost: np.ndarray) -> np.ndarray:
    """Hungarian algorithm on a square n×n cost; returns the column assigned to each row.

    Minimises Σ_i cost[i, col[i]] over permutations. Potentials u (rows) and v (columns) keep
    cost[i, j] − u[i] − v[j] ≥ 0; each outer pass adds one row along a shortest augmenting path.
    Index 0 of u, v, match and way is a sentinel, so rows and columns are numbered from 1.
    """
    cost = np.asarray(cost, dtype=np.float64)
    n = cost.shape[0]
    if cost.shape != (n, n):
        raise ValueError(f"cost must be square, got shape {cost.shape}")
    u, v = np.zeros(n + 1), np.zeros(n + 1)
    match = np.zeros(n + 1, dtype=np.int64)  # match[j]: the row holding column j (0: none)
    way = np.zeros(n + 1, dtype=np.int64)  # way[j]: previous column on the augmenting path
    for row in range(1, n + 1):
        match[0], col = row, 0
        min_slack = np.full(n + 1, np.inf)
        used = np.zeros(n + 1, dtype=bool)
        while match[col] != 0:
            used[col] = True
            current = match[col]
            slack = cost[current - 1] - u[current] - v[1:]
            better = ~used[1:] & (slack < min_slack[1:])
            min_slack[1:][better] = slack[better]
            way[1:][better] = col
            candidates = np.where(used[1:], np.inf, min_slack[1:])
            next_col = int(np.argmin(candidates)) + 1
            delta = candidates[next_col - 1]
            u[match[used]] += delta
            v[used] -= delta
            min_slack[~used] -= delta
            col = next_col
        while col != 0:  # flip the augmenting path
            previous = way[col]
            match[col] = match[previous]
            col = previous
    assignment = np.empty(n, dtype=np.int64)
    assignment[match[1:] - 1] = np.arange(n)
    return assignment


def max_overlap_assignment(overlap: np.ndarray) -> np.ndarray:
    """One-to-one match of rows to columns maximising the summed ``overlap`` (any R×C shape).

    Returns the matched column of each row, or −1 for rows left over when R > C.
    """
    overlap = np.asarray(overlap, dtype=np.float64)
    rows, cols = overlap.shape
    size = max(rows, cols)
    if size == 0:
        return np.zeros(0, dtype=np.int64)
    # Pad with zero-overlap dummies to a square matrix and minimise the negated overlap.
    cost = np.zeros((size, size))
    cost[:rows, :cols] = -overlap
    assignment = min_cost_assignment(cost)[:rows]
    return np.where(assignment < cols, assignment, -1)
