"""Tests for strategies.maths.mixture: top-m peer weights and sparse mixtures, by hand."""

import numpy as np
import pytest

from strategies.maths import mixture
from strategies.maths.averaging import ReplyRows
from strategies.maths.mixture import SparseWeights, sparse_mixtures, top_peers
from strategies.maths.similarity import personalized_mixtures

W3 = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5]])
THETAS = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])


def test_top_peers_keeps_self_and_the_largest_peers_renormalised_by_hand():
    sparse = top_peers(W3, m=1)
    # row 0 keeps {0, 1}: [.5, .3] / .8; row 1 keeps {1, 2}: [.6, .3] / .9;
    # row 2's peers tie at .25: the lower column, 0, is kept: [.25, .5] / .75.
    np.testing.assert_array_equal(sparse.columns, [[0, 1], [1, 2], [0, 2]])
    np.testing.assert_allclose(sparse.weights, [[0.625, 0.375], [2 / 3, 1 / 3], [1 / 3, 2 / 3]])


def test_top_peers_with_m_at_least_k_minus_1_keeps_the_dense_row():
    for m in (2, 5):
        sparse = top_peers(W3, m)
        np.testing.assert_array_equal(sparse.columns, [[0, 1, 2]] * 3)
        np.testing.assert_allclose(sparse.weights, W3)


def test_a_row_with_nothing_kept_keeps_its_own_adapter():
    W = np.array([[0.0, 1.0], [1.0, 0.0]])  # self weight 0
    sparse = top_peers(W, m=0)
    np.testing.assert_array_equal(sparse.columns, [[0], [1]])
    np.testing.assert_array_equal(sparse.weights, [[1.0], [1.0]])


@pytest.mark.parametrize("W, m", [(np.ones((2, 3)), 1), (-W3, 1), (W3, -1)])
def test_top_peers_refuses_bad_input(W, m):
    with pytest.raises(ValueError):
        top_peers(W, m)


def test_sparse_mixture_by_hand(monkeypatch):
    # p equal: mean = [3, 4]; λ = 0.5. Row 0 = 0.5·[3, 4] + 0.5·(.625·[1, 2] + .375·[3, 4])
    # = [1.5, 2] + [0.875, 1.375] = [2.375, 3.375]; row 1 = [1.5, 2] + 0.5·(2/3·[3, 4] +
    # 1/3·[5, 6]) = [1.5, 2] + [11/6, 7/3]; row 2 = [1.5, 2] + 0.5·(1/3·[1, 2] + 2/3·[5, 6]).
    mean = THETAS.mean(axis=0)
    out = sparse_mixtures(THETAS, top_peers(W3, 1), mean, 0.5)
    expected = [[2.375, 3.375], [1.5 + 11 / 6, 2 + 7 / 3], [1.5 + 11 / 6, 2 + 7 / 3]]
    np.testing.assert_allclose(out, expected, rtol=1e-15)
    monkeypatch.setattr(mixture, "DENSE_PER_PEER", 0)  # the gathered path
    out = sparse_mixtures(THETAS, top_peers(W3, 1), mean, 0.5)
    np.testing.assert_allclose(out, expected, rtol=1e-15)


def test_lambda_zero_is_fedavg_and_one_is_the_peer_mixture_alone():
    mean = THETAS.mean(axis=0)
    np.testing.assert_array_equal(sparse_mixtures(THETAS, top_peers(W3, 1), mean, 0.0), [mean] * 3)
    out = sparse_mixtures(THETAS, top_peers(W3, 1), mean, 1.0)
    np.testing.assert_allclose(out[0], 0.625 * THETAS[0] + 0.375 * THETAS[1], rtol=1e-15)


def test_all_peers_kept_matches_the_dense_rule():
    rng = np.random.default_rng(0)
    thetas = rng.standard_normal((6, 50)).astype(np.float32)
    W = rng.random((6, 6))
    W /= W.sum(axis=1, keepdims=True)
    p = np.arange(1.0, 7.0)
    mean = (p / p.sum()) @ thetas.astype(np.float64)
    sparse = sparse_mixtures(thetas, top_peers(W, 5), mean.astype(np.float32), 0.3)
    dense = personalized_mixtures(thetas, W, p, 0.3)
    np.testing.assert_allclose(sparse, dense, rtol=0, atol=1e-5)
    assert sparse.dtype == np.float32


def test_a_dropped_peer_does_not_enter_the_mixture():
    thetas = THETAS.copy()
    before = sparse_mixtures(thetas, top_peers(W3, 1), thetas.mean(axis=0), 1.0)
    thetas[2] = 1e6  # client 2 is not among row 0's kept columns {0, 1}
    after = sparse_mixtures(thetas, top_peers(W3, 1), THETAS.mean(axis=0), 1.0)
    np.testing.assert_array_equal(after[0], before[0])


@pytest.mark.parametrize("dense_per_peer", [0, 16])  # 0: the gathered path at any K
def test_bits_do_not_depend_on_layout_and_both_paths_agree(monkeypatch, dense_per_peer):
    monkeypatch.setattr(mixture, "DENSE_PER_PEER", dense_per_peer)
    monkeypatch.setattr(mixture, "COLUMNS", 96)  # 11 blocks, the last one 41 wide
    rng = np.random.default_rng(1)
    thetas = rng.standard_normal((7, 1001)).astype(np.float32)
    W = rng.random((7, 7))
    W /= W.sum(axis=1, keepdims=True)
    sparse, mean = top_peers(W, 3), thetas.mean(axis=0)
    reference = sparse_mixtures(thetas, sparse, mean, 0.7)
    shifted = np.empty(thetas.size + 1, np.float32)[1:].reshape(thetas.shape)
    shifted[...] = thetas  # misaligned by 4 bytes
    np.testing.assert_array_equal(sparse_mixtures(shifted, sparse, mean, 0.7), reference)
    fortran = np.asfortranarray(thetas)
    np.testing.assert_array_equal(sparse_mixtures(fortran, sparse, mean, 0.7), reference)
    by_hand = np.stack(
        [
            0.3 * mean.astype(np.float64)
            + 0.7 * sparse.weights[i] @ thetas[sparse.columns[i]].astype(np.float64)
            for i in range(7)
        ]
    )
    np.testing.assert_allclose(reference, by_hand, rtol=0, atol=1e-6)


def test_out_buffer_is_reused_and_checked():
    thetas = THETAS.astype(np.float32)
    first = sparse_mixtures(thetas, top_peers(W3, 1), thetas.mean(axis=0), 0.5)
    again = sparse_mixtures(thetas, top_peers(W3, 2), thetas.mean(axis=0), 0.5, out=first)
    assert again is first
    with pytest.raises(ValueError, match="aligned"):
        sparse_mixtures(thetas, top_peers(W3, 1), thetas.mean(axis=0), 0.5, out=np.empty((3, 2)))
    with pytest.raises(ValueError, match="do not match"):
        sparse_mixtures(thetas, SparseWeights(np.zeros((2, 1), int), np.ones((2, 1))), thetas[0], 1)


def _as_replies(thetas: np.ndarray, widths: list[int]) -> tuple[list[dict], dict, list[str]]:
    """Each row of ``thetas`` cut into keys of these widths, as replies' states would hold it."""
    keys = [f"k{i:02d}" for i in range(len(widths))]
    bounds = np.cumsum([0, *widths])
    states = [
        {key: row[bounds[i] : bounds[i + 1]].copy() for i, key in enumerate(keys)} for row in thetas
    ]
    return states, states[0], keys


def _round(seed: int, width: int, peers: int = 3):
    """9 clients' float32 thetas of ``width`` values, top-``peers`` weights and their mean."""
    rng = np.random.default_rng(seed)
    thetas = rng.standard_normal((9, width)).astype(np.float32)
    W = rng.random((9, 9))
    W /= W.sum(axis=1, keepdims=True)
    return thetas, top_peers(W, peers), thetas.mean(axis=0)


@pytest.mark.parametrize("dense_per_peer", [0, 16])
def test_mixtures_read_from_replies_give_the_bits_of_the_matrix(monkeypatch, dense_per_peer):
    """The replies' states are read in blocks (here 3 blocks of 128 columns that cut across
    keys, the last one short), never copied whole: the same bits as the K×D matrix."""
    monkeypatch.setattr(mixture, "DENSE_PER_PEER", dense_per_peer)
    monkeypatch.setattr(mixture, "COLUMNS", 64)
    monkeypatch.setattr(mixture, "BLOCK_VALUES", 9 * 128)
    thetas, sparse, mean = _round(2, 300)
    states, like, keys = _as_replies(thetas, [37, 100, 63, 100])
    from_replies = sparse_mixtures(ReplyRows(states, like, keys), sparse, mean, 0.6)
    np.testing.assert_array_equal(from_replies, sparse_mixtures(thetas, sparse, mean, 0.6))
    dense = np.zeros((9, 9))
    np.put_along_axis(dense, sparse.columns, sparse.weights, axis=1)
    by_hand = 0.4 * mean.astype(np.float64) + 0.6 * dense @ thetas.astype(np.float64)
    np.testing.assert_allclose(from_replies, by_hand, rtol=0, atol=1e-6)


def test_reply_rows_refuse_a_reply_of_another_shape():
    states, like, keys = _as_replies(np.zeros((2, 5), np.float32), [2, 3])
    states[1]["k01"] = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="reply 1 has shape"):
        ReplyRows(states, like, keys)


def test_threads_sharing_the_dense_blocks_give_the_bits_of_one_thread(monkeypatch):
    # 5 blocks of 128 columns (the last one 88 wide), read from replies, on 1 and on 2 threads.
    monkeypatch.setattr(mixture, "BLOCK_VALUES", 9 * 128)
    thetas, sparse, mean = _round(4, 600)
    states, like, keys = _as_replies(thetas, [37, 100, 263, 200])
    got = {}
    for workers in (1, 2):
        monkeypatch.setattr("strategies.maths.reproducible.WORKERS", workers)
        got[workers] = sparse_mixtures(ReplyRows(states, like, keys), sparse, mean, 0.6)
    np.testing.assert_array_equal(got[2], got[1])
    np.testing.assert_array_equal(got[1], sparse_mixtures(thetas, sparse, mean, 0.6))
