"""Tests for strategies.maths.robust: hand-worked clipping, median, trimmed mean, and poisoning."""

import numpy as np
import pytest

from strategies.maths.averaging import ReplyUpdates
from strategies.maths.robust import (
    clip_by_norm,
    clip_updates,
    coordinate_median,
    robust_aggregate,
    row_norms,
    trimmed_mean,
)


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


# Three updates with norms 5, √6 ≈ 2.449 and 10 (the hand-worked example of test_robust_fedavg).
HAND = np.array([[3.0, 0.0, 0.0, 4.0], [2.0, -1.0, 1.0, 0.0], [0.0, 6.0, 8.0, 0.0]])


def test_adaptive_clip_is_the_median_norm_by_hand():
    np.testing.assert_allclose(row_norms(HAND), [5.0, np.sqrt(6.0), 10.0])
    clipped, bound, count = clip_updates(HAND)
    # Median norm 5: only row 2 is longer; [0, 6, 8, 0] * 5/10 = [0, 3, 4, 0].
    assert bound == 5.0 and count == 1
    np.testing.assert_allclose(clipped, [[3, 0, 0, 4], [2, -1, 1, 0], [0, 3, 4, 0]])
    assert HAND[2, 1] == 6.0  # not in place: the input is untouched
    # Fixed M = 3: rows 0 and 2 are clipped, [3, 0, 0, 4] * 3/5 = [1.8, 0, 0, 2.4].
    clipped, bound, count = clip_updates(HAND, 3.0)
    assert bound == 3.0 and count == 2
    np.testing.assert_allclose(clipped, [[1.8, 0, 0, 2.4], [2, -1, 1, 0], [0, 1.8, 2.4, 0]])
    # A median norm of 0 (most clients sent no change) zeroes the others.
    zero_median = np.array([[0.0, 0.0], [0.0, 0.0], [100.0, 0.0]], np.float32)
    clipped, bound, count = clip_updates(zero_median, in_place=True)
    assert bound == 0.0 and count == 1 and clipped is zero_median and not zero_median.any()
    with pytest.raises(ValueError, match="clip_norm"):
        clip_updates(HAND, -1.0)


def test_robust_aggregate_by_hand():
    # Adaptive clip then median: per column median of (3, 2, 0), (0, −1, 3), (0, 1, 4), (4, 0, 0).
    aggregate, bound, count = robust_aggregate(HAND, "median")
    np.testing.assert_allclose(aggregate, [2.0, 0.0, 1.0, 0.0])
    assert (bound, count) == (5.0, 1)
    # β = 0.2 of K = 3 trims ⌊0.6⌋ = 0: the plain mean of the clipped rows, (5, 2, 5, 4) / 3.
    aggregate, _, _ = robust_aggregate(HAND, "trimmed-mean", 0.2)
    np.testing.assert_allclose(aggregate, np.array([5.0, 2.0, 5.0, 4.0]) / 3)
    # β = 0.4 trims one from each end, which for K = 3 is the median again.
    aggregate, _, _ = robust_aggregate(HAND, "trimmed-mean", 0.4)
    np.testing.assert_allclose(aggregate, [2.0, 0.0, 1.0, 0.0])
    # Fixed M = 3, median of (1.8, 2, 0), (0, −1, 1.8), (0, 1, 2.4), (2.4, 0, 0).
    aggregate, bound, count = robust_aggregate(HAND, "median", clip_norm=3.0)
    np.testing.assert_allclose(aggregate, [1.8, 0.0, 1.0, 0.0])
    assert (bound, count) == (3.0, 2)
    assert robust_aggregate(HAND.astype(np.float32), "median")[0].dtype == np.float32


def test_robust_aggregate_rejects_bad_arguments_before_touching_the_input():
    deltas = HAND.copy()
    with pytest.raises(ValueError, match="rule"):
        robust_aggregate(deltas, "mean")
    with pytest.raises(ValueError, match="trim_fraction"):
        robust_aggregate(deltas, "trimmed-mean", 0.5)
    robust_aggregate(deltas, "median", clip_norm=1.0)  # clipping works on copies of chunks
    np.testing.assert_array_equal(deltas, HAND)


def test_reply_updates_by_hand():
    # Keys sort as "a" (1×2) then "b" (2×1): flat rows [a00, a01, b00, b10] minus the sent ones.
    sent = {"a": np.array([[1.0, 2.0]], np.float32), "b": np.array([[0.0], [1.0]], np.float32)}
    replies = [
        {"a": np.array([[2.0, 2.0]], np.float32), "b": np.array([[1.0], [3.0]], np.float32)},
        {"a": np.array([[1.0, 0.0]], np.float32), "b": np.array([[0.5], [1.0]], np.float32)},
    ]
    updates = ReplyUpdates(replies, sent, ["a", "b"])
    assert updates.shape == (2, 4)
    np.testing.assert_array_equal(updates.sent_flat, [1, 2, 0, 1])
    block = updates.block(1, 3, np.empty((2, 2), np.float32))  # a01 and b00: across the keys
    np.testing.assert_array_equal(block, [[0.0, 1.0], [-2.0, 0.5]])
    np.testing.assert_array_equal(
        updates.block(0, 4, np.empty((1, 4), np.float32), slice(1, 2)), [[0, -2, 0.5, 0]]
    )
    np.testing.assert_array_equal(row_norms(updates), [np.sqrt(6.0), np.sqrt(4.25)])
    with pytest.raises(ValueError, match="client-ranks"):
        ReplyUpdates(replies, {**sent, "b": np.zeros((3, 1), np.float32)}, ["a", "b"])


@pytest.mark.parametrize("rule", ["median", "trimmed-mean"])
@pytest.mark.parametrize("clip_norm", [0.0, 40.0])
def test_reply_updates_give_the_bits_of_the_update_matrix(monkeypatch, rule, clip_norm):
    # Keys of odd sizes, more than one 32 768-value norm chunk and column chunks of 300 that
    # cross key boundaries, sorted by two threads: the same values in the same order, so the
    # same bits as the update matrix on one thread.
    rng = np.random.default_rng(5)
    shapes = {"k0": (7, 1000), "k1": (3, 5001), "k2": (11, 997), "k3": (5, 13)}
    sent = {key: rng.standard_normal(shape).astype(np.float32) for key, shape in shapes.items()}
    replies = [
        {
            key: (value + rng.standard_normal(value.shape) * (k + 1)).astype(np.float32)
            for key, value in sent.items()
        }
        for k in range(6)
    ]
    keys = sorted(shapes)
    flat = lambda state: np.concatenate([np.ravel(state[key]) for key in keys])  # noqa: E731
    matrix = np.stack([flat(reply) - flat(sent) for reply in replies])
    monkeypatch.setattr("strategies.maths.robust._chunk_columns", lambda clients: 300)
    monkeypatch.setattr("strategies.maths.robust._NORM_ROWS", 4)  # groups of 4 and 2 rows
    updates = ReplyUpdates(replies, sent, keys)
    np.testing.assert_array_equal(row_norms(updates), row_norms(matrix))
    monkeypatch.setattr("strategies.maths.reproducible.WORKERS", 1)  # the matrix, on one thread
    expected = robust_aggregate(matrix, rule, 0.2, clip_norm)
    monkeypatch.setattr("strategies.maths.reproducible.WORKERS", 2)  # chunks shared by 2 threads
    got = robust_aggregate(updates, rule, 0.2, clip_norm)
    assert got[1:] == expected[1:]
    np.testing.assert_array_equal(got[0], expected[0])
