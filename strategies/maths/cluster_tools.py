"""NumPy building block for ``similarity``: a deterministic k-means.

It stands in for scikit-learn's ``KMeans`` so that the aggregation maths depends on NumPy
alone. It works on the tiny inputs of one federated round (K clients, a handful of clusters),
not on model-sized data.

- k-means: Lloyd's algorithm (Lloyd 1982) seeded by farthest-point traversal (Gonzalez 1985),
  which needs no random generator, so spectral clustering gives the same clusters every run.
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
