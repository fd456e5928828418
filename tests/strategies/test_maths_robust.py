"""Tests for strategies.maths.robust: hand-worked clipping, median, trimmed mean, and poisoning."""

import numpy as np
import pytest

from strategies.maths.robust import clip_by_norm, coordinate_median, trimmed_mean


def test_clip_by_norm_by_hand():
    # ‖[3, 4]‖ = 5: under 10 nothing happens; with 1 it becomes [0.6, 0.8].
    np.testing.assert_array_equal(clip_by_norm(np.array([3.0, 4.0]), 10.0), [3.0, 4.0])
    np.testing.assert_allclose(clip_by_norm(np.array([3.0, 4.0]), 1.0), [0.6, 0.8])
    np.testing.assert_array_equal(clip_by_norm(np.zeros(3), 1.0), np.zeros(3))
    assert clip_by_norm(np.array([30, 40], np.float32), 5.0).dtype == np.float32
    with pytest.raises(ValueError, match="max_norm"):
        clip_by_norm(np.ones(2), 0.0)


def test_median_and_trimmed_mean_by_hand():
    deltas = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, -30.0]])
    np.testing.assert_array_equal(coordinate_median(deltas), [2.0, 10.0])
    # Even K averages the middle two: median of 1, 2, 3, 10 = 2.5.
    np.testing.assert_array_equal(coordinate_median(np.array([[1.0], [2.0], [3.0], [10.0]])), [2.5])
    column = np.array([[1.0], [2.0], [3.0], [100.0]])
    # β = 0.25, K = 4: drop 1 from each end -> mean(2, 3) = 2.5.  β = 0: mean = 26.5.
    np.testing.assert_array_equal(trimmed_mean(column, 0.25), [2.5])
    np.testing.assert_array_equal(trimmed_mean(column, 0.0), [26.5])
    with pytest.raises(ValueError, match="trim_fraction"):
        trimmed_mean(column, 0.5)
    with pytest.raises(ValueError, match="K×D"):
        coordinate_median(np.zeros(3))


def test_one_poisoned_client_times_100():
    honest = np.array(
        [
            [1.0, -1.0, 0.5],
            [1.1, -0.9, 0.4],
            [0.9, -1.1, 0.6],
            [1.05, -0.95, 0.55],
            [0.95, -1.05, 0.45],
        ]
    )
    poisoned = 100 * honest[0]  # [100, −100, 50]
    deltas = np.vstack([honest, poisoned])
    # Plain mean: col 0 = (1 + 1.1 + 0.9 + 1.05 + 0.95 + 100) / 6 = 105 / 6 = 17.5, col 2 = 8.75.
    np.testing.assert_allclose(deltas.mean(axis=0), [17.5, -17.5, 8.75])
    # Median of 6: mean of the 3rd and 4th values: col 0 (1 + 1.05)/2 = 1.025, col 2 0.525.
    np.testing.assert_allclose(coordinate_median(deltas), [1.025, -1.025, 0.525])
    # β = 0.2 drops one value at each end: col 0 mean(0.95, 1, 1.05, 1.1) = 1.025.
    np.testing.assert_allclose(trimmed_mean(deltas, 0.2), [1.025, -1.025, 0.525])
    # Both stay inside the honest range; the mean is 16× off.
    low, high = honest.min(axis=0), honest.max(axis=0)
    for robust in (coordinate_median(deltas), trimmed_mean(deltas, 0.2)):
        assert np.all((low <= robust) & (robust <= high))
    assert np.linalg.norm(deltas.mean(axis=0) - honest[0]) > 10 * np.linalg.norm(honest[0])
