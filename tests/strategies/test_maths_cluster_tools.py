"""Tests for strategies.maths.cluster_tools: Hungarian assignment and deterministic k-means."""

import itertools

import numpy as np

from strategies.maths.cluster_tools import (
    farthest_point_kmeans,
    max_overlap_assignment,
    min_cost_assignment,
)


def test_min_cost_assignment_by_hand():
    # Of the 6 permutations the costs are 6, 11, 5, 7, 9, 6; the best is rows -> cols (1, 0, 2):
    # 1 + 2 + 2 = 5.
    cost = np.array([[4, 1, 3], [2, 0, 5], [3, 2, 2]])
    np.testing.assert_array_equal(min_cost_assignment(cost), [1, 0, 2])


def test_min_cost_assignment_matches_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(1, 6))
        cost = rng.integers(0, 10, size=(n, n)).astype(float)
        best = min(
            sum(cost[i, perm[i]] for i in range(n)) for perm in itertools.permutations(range(n))
        )
        assignment = min_cost_assignment(cost)
        assert sorted(assignment) == list(range(n))
        assert cost[np.arange(n), assignment].sum() == best


def test_max_overlap_assignment_rectangular():
    # 3 new clusters, 2 old: rows 0 -> col 1 (5), row 2 -> col 0 (4); row 1 is left over.
    overlap = np.array([[1, 5], [2, 0], [4, 1]])
    np.testing.assert_array_equal(max_overlap_assignment(overlap), [1, -1, 0])
    np.testing.assert_array_equal(max_overlap_assignment(overlap.T), [2, 0])


def test_farthest_point_kmeans_two_groups():
    points = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0], [0.0, 0.1]])
    # Seed 0 is row 0; the farthest row from it is row 3 ([5.1, 5]); then Lloyd settles.
    np.testing.assert_array_equal(farthest_point_kmeans(points, 2), [0, 0, 1, 1, 0])
