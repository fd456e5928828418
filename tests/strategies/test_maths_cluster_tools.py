"""Tests for strategies.maths.cluster_tools: deterministic k-means."""

import numpy as np

from strategies.maths.cluster_tools import farthest_point_kmeans


def test_farthest_point_kmeans_two_groups():
    points = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0], [0.0, 0.1]])
    # Seed 0 is row 0; the farthest row from it is row 3 ([5.1, 5]); then Lloyd settles.
    np.testing.assert_array_equal(farthest_point_kmeans(points, 2), [0, 0, 1, 1, 0])
