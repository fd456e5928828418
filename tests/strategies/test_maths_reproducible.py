"""Reductions and the count sketch: exact by hand, identical bits in any memory layout, and the
sketch's cosines within its stated error bound."""

from __future__ import annotations

import numpy as np
import pytest

from strategies.maths.averaging import ReplyRows
from strategies.maths.reproducible import (
    CHUNK,
    aligned_copy,
    aligned_empty,
    aligned_matmul,
    is_aligned,
    sum_of_squares,
    weighted_row_sum,
)
from strategies.maths.robust import robust_aggregate
from strategies.maths.similarity import cosine_matrix, personalized_mixtures
from strategies.maths.sketch import count_sketch, sketch_rows

OFFSETS = range(4, 64, 4)


def misaligned(array: np.ndarray, offset: int) -> np.ndarray:
    """A copy of ``array`` whose data starts ``offset`` bytes past a 64-byte boundary."""
    base = aligned_empty(array.nbytes + 64, np.uint8)
    view = base[offset : offset + array.nbytes].view(array.dtype).reshape(array.shape)
    view[...] = array
    assert view.ctypes.data % 64 == offset
    return view


def test_aligned_buffers():
    for shape in (1, 7, (3, 5), (100, 33)):
        a = aligned_empty(shape, np.float32)
        assert is_aligned(a) and a.shape == (shape if isinstance(shape, tuple) else (shape,))
    x = misaligned(np.arange(6, dtype=np.float32), 4)
    assert not is_aligned(x) and is_aligned(aligned_copy(x))
    y = aligned_copy(x)
    assert aligned_copy(y) is y  # already aligned: no copy
    np.testing.assert_array_equal(aligned_matmul([[1, 2]], [[3], [4]], np.float32), [[11]])


def test_weighted_row_sum_by_hand():
    # 0.25·[4, 8] + 0.75·[0, 4] = [1, 5]; a zero weight skips its row (even a NaN one).
    rows = np.array([[4, 8], [0, 4], [np.nan, np.nan]], dtype=np.float32)
    out = weighted_row_sum(rows, [0.25, 0.75, 0.0])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [1, 5])
    # float64 accumulation: 1 + 1e-8·10⁸ in float32 steps would lose every small term.
    many = np.array([[1.0]] + [[1e-8]] * 100, dtype=np.float32)
    total = weighted_row_sum(many, [1.0] * 101, np.float64)
    assert abs(total[0] - (1 + 100 * float(np.float32(1e-8)))) < 1e-15
    assert sum_of_squares(np.array([3, 4], np.float32)) == 25.0
    with pytest.raises(ValueError, match="weights"):
        weighted_row_sum(rows, [1.0])


def test_count_sketch_by_hand():
    # D = 6, k = 2: blocks [x0 x1], [x2 x3], [x4 x5], each signed, then shifted cyclically.
    sketch = count_sketch(6, 2, seed=3)
    x = np.array([[1, 2, 3, 4, 5, 6]], dtype=np.float32)
    signed = x[0] * sketch.signs
    expected = np.zeros(2)
    for block, shift in enumerate(sketch.shifts):
        expected += np.roll(signed[2 * block : 2 * block + 2], shift)
    np.testing.assert_array_equal(sketch_rows(x, sketch)[0], expected)
    assert sketch.out_width == 2 and not sketch.exact
    # D <= k: the rows themselves, so the cosines are exact.
    small = count_sketch(6, 8)
    assert small.exact
    np.testing.assert_array_equal(sketch_rows(x, small), x.astype(np.float64))


def test_sketched_inner_products_are_unbiased_with_the_stated_variance():
    """Over 400 seeds: mean error ≈ 0 and mean squared error ≤ (‖x‖²‖y‖² + ⟨x,y⟩²)/k."""
    rng = np.random.default_rng(0)
    D, k = 3000, 64
    x = rng.normal(size=D)
    y = 0.6 * x + 0.8 * rng.normal(size=D)
    x[:50] *= 20  # a few heavy coordinates: the bound must hold for any vectors
    exact = float(x @ y)
    errors = []
    for seed in range(400):
        sx, sy = sketch_rows(np.stack([x, y]), count_sketch(D, k, seed=seed))
        errors.append(float(sx @ sy) - exact)
    errors = np.array(errors)
    bound = (float(x @ x) * float(y @ y) + exact**2) / k
    # Mean of 400 draws: within 4 standard errors of 0; variance within 30% over the bound.
    assert abs(errors.mean()) < 4 * np.sqrt(bound / 400)
    assert np.mean(errors**2) < 1.3 * bound


def test_sketched_cosines_are_within_the_bound_of_the_exact_ones():
    """K = 12 updates of D = 200 000 (3 planted tasks) at the default k = 8192: every cosine is
    within 2ε/(1 − ε) of the exact one for ε = 5 standard deviations √(2/k) of the sketch."""
    rng = np.random.default_rng(1)
    D = 200_000
    directions = rng.normal(size=(3, D)).astype(np.float32)
    deltas = directions[np.arange(12) % 3] + rng.normal(size=(12, D)).astype(np.float32)
    sketch = count_sketch(D)
    exact = cosine_matrix(deltas)
    approx = cosine_matrix(sketch_rows(deltas, sketch))
    eps = 5 * np.sqrt(2 / sketch.width)
    assert np.max(np.abs(approx - exact)) <= 2 * eps / (1 - eps)
    # Planted structure survives: same-task cosines (≈ 0.5) stay apart from cross-task (≈ 0).
    same = np.arange(12)[:, None] % 3 == np.arange(12)[None, :] % 3
    assert approx[same & ~np.eye(12, dtype=bool)].min() > approx[~same].max() + 0.3


@pytest.mark.parametrize("offset", OFFSETS)
def test_every_reduction_gives_the_same_bits_in_any_layout(offset):
    rng = np.random.default_rng(2)
    K, D = 7, 20_011  # odd sizes: rows of a misaligned matrix start at every alignment
    thetas = rng.normal(size=(K, D)).astype(np.float32)
    p = rng.random(K) + 0.1
    W = rng.random((K, K))
    W /= W.sum(axis=1, keepdims=True)
    sketch = count_sketch(D, 512)

    def results(x: np.ndarray) -> list[bytes]:
        sketches = sketch_rows(x, sketch)
        outputs = [
            weighted_row_sum(x, p),
            sketches,
            cosine_matrix(sketches),
            cosine_matrix(x),
            personalized_mixtures(x, W, p, 0.5),
            robust_aggregate(x, "median")[0],
            robust_aggregate(x, "trimmed-mean", 0.2, clip_norm=50.0)[0],
            np.array([sum_of_squares(row) for row in x]),
        ]
        return [np.ascontiguousarray(o).tobytes() for o in outputs]

    assert results(misaligned(thetas, offset)) == results(aligned_copy(thetas))


def test_weighted_row_sum_of_reply_rows_is_the_bits_of_the_matrix():
    """A block source (the replies' states, ``ReplyRows``) read chunk by chunk across key
    boundaries, zero weights skipped: the bits of the matrix."""
    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((5, 2 * CHUNK + 150)).astype(np.float32)  # 3 chunks
    keys, bounds = ["a", "b", "c"], [0, 40, CHUNK + 101, 2 * CHUNK + 150]
    states = [
        {k: row[bounds[i] : bounds[i + 1]].copy() for i, k in enumerate(keys)} for row in matrix
    ]
    weights = [0.1, 0.0, 0.5, 0.15, 0.25]
    rows = ReplyRows(states, states[0], keys)
    np.testing.assert_array_equal(
        weighted_row_sum(rows, weights), weighted_row_sum(matrix, weights)
    )
    assert weighted_row_sum(rows, weights).dtype == np.float32
