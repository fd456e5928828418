"""Tests for strategies.maths.similarity: hand-worked matrices and planted task structure."""

import math

import numpy as np
import pytest

from strategies.maths.similarity import (
    assign_to_nearest,
    canonical_labels,
    complete_linkage,
    cosine_matrix,
    mixing_weights,
    peer_affinity,
    peer_weights,
    personalized_mixtures,
    spectral_clusters,
)

R = 1 / math.sqrt(2)


def test_cosine_matrix_by_hand_with_zero_row():
    # Rows [1,0], [1,1], [0,0], [−2,0]: cos(r0,r1) = 1/√2, cos(r0,r3) = −1, cos(r1,r3) = −1/√2;
    # the zero row is 0 against everyone and 1 on the diagonal.
    deltas = np.array([[1, 0], [1, 1], [0, 0], [-2, 0]], dtype=np.float32)
    expected = [[1, R, 0, -1], [R, 1, 0, -R], [0, 0, 1, 0], [-1, -R, 0, 1]]
    S = cosine_matrix(deltas)
    assert S.dtype == np.float64
    np.testing.assert_allclose(S, expected, atol=1e-6)


def test_mixing_weights_by_hand_and_stable():
    # S = I, τ = 0.5: row 0 = softmax([2, 0]) = [e²/(e²+1), 1/(e²+1)] = [0.8807971, 0.1192029].
    W = mixing_weights(np.eye(2), tau=0.5)
    np.testing.assert_allclose(W, [[0.8807971, 0.1192029], [0.1192029, 0.8807971]], atol=1e-7)
    # τ = 1e-3 makes logits of 1000: without the max shift exp() would overflow to inf.
    W = mixing_weights(np.array([[1.0, 0.9], [0.9, 1.0]]), tau=1e-3)
    assert np.all(np.isfinite(W))
    np.testing.assert_allclose(W.sum(axis=1), [1.0, 1.0])
    with pytest.raises(ValueError, match="tau"):
        mixing_weights(np.eye(2), tau=0.0)


def test_personalized_mixtures_by_hand():
    thetas = np.array([[2.0, 0.0], [0.0, 4.0]])
    W = np.array([[0.75, 0.25], [0.5, 0.5]])
    # p = (1/2, 1/2): global mean [1, 2].  W·θ: row 0 = [1.5, 1.0], row 1 = [1.0, 2.0].
    # λ = 0.5: row 0 = 0.5·[1,2] + 0.5·[1.5,1] = [1.25, 1.5]; row 1 = [1, 2].
    np.testing.assert_allclose(
        personalized_mixtures(thetas, W, [1, 1], 0.5), [[1.25, 1.5], [1.0, 2.0]]
    )
    np.testing.assert_array_equal(personalized_mixtures(thetas, W, [1, 1], 0.0), [[1, 2], [1, 2]])
    np.testing.assert_allclose(personalized_mixtures(thetas, W, [1, 1], 1.0), [[1.5, 1], [1, 2]])
    # Unequal p with λ = 0 is exactly fedavg: p = (1/4, 3/4) -> [0.5, 3].
    np.testing.assert_array_equal(personalized_mixtures(thetas, W, [1, 3], 0.0)[1], [0.5, 3.0])


@pytest.mark.parametrize(
    ("W", "lam", "message"),
    [
        (np.full((2, 2), 0.5), 1.5, "lam"),
        (np.full((2, 2), 0.4), 0.5, "sum to 1"),
        (np.full((3, 3), 1 / 3), 0.5, "2×2"),
    ],
)
def test_personalized_mixtures_rejects(W, lam, message):
    with pytest.raises(ValueError, match=message):
        personalized_mixtures(np.zeros((2, 3)), W, [1, 1], lam)


def test_assign_to_nearest():
    centroids = np.array([[0.0, 1.0], [5.0, 0.0], [-1.0, 0.0]])
    # cos([1, 0.1], ·) = [0.0995, 0.995, −0.995]: centroid 1.
    assert assign_to_nearest(np.array([1.0, 0.1]), centroids) == 1
    # A zero centroid scores 0, which beats the −1 of the opposite one.
    assert assign_to_nearest(np.array([-1.0, 0.0]), np.array([[0.0, 0.0], [1.0, 0.0]])) == 0


def test_canonical_labels():
    np.testing.assert_array_equal(canonical_labels([5, 5, 2, 7, 2]), [0, 0, 1, 2, 1])
    assert canonical_labels([]).size == 0


def test_complete_linkage_by_hand():
    # Distances 1 − S: d01 = 0.1, d23 = 0.2, d12 = 0.8, d02 = d13 = 0.9, d03 = 1.0.
    # Merges: {0,1} at 0.1, {2,3} at 0.2, then both at max(d02, d03, d12, d13) = 1.0.
    S = np.array([[1, 0.9, 0.1, 0.0], [0.9, 1, 0.2, 0.1], [0.1, 0.2, 1, 0.8], [0.0, 0.1, 0.8, 1]])
    np.testing.assert_array_equal(complete_linkage(S, threshold=0.5), [0, 0, 1, 1])
    np.testing.assert_array_equal(complete_linkage(S, threshold=1.0), [0, 0, 0, 0])
    np.testing.assert_array_equal(complete_linkage(S, k=2), [0, 0, 1, 1])
    np.testing.assert_array_equal(complete_linkage(S, k=4), [0, 1, 2, 3])
    with pytest.raises(ValueError, match="exactly one"):
        complete_linkage(S)


def test_complete_linkage_does_not_chain():
    # d01 = d12 = 0.3 but d02 = 0.9. Single linkage at 0.5 would join all three; complete linkage
    # merges {0,1} (first of the tie) and then sees max(d02, d12) = 0.9 > 0.5 to client 2.
    S = np.array([[1, 0.7, 0.1], [0.7, 1, 0.7], [0.1, 0.7, 1]])
    np.testing.assert_array_equal(complete_linkage(S, threshold=0.5), [0, 0, 1])


def test_spectral_clusters_on_exact_blocks():
    # Tasks interleaved: clients (t0, t1, t2, t0, t1, t2). S is 1 within a task, 0 across.
    # Each 2×2 block of ones gives Laplacian eigenvalues {0, 1}: spectrum [0,0,0,1,1,1] -> k = 3.
    task = np.array([0, 1, 2, 0, 1, 2])
    S = (task[:, None] == task[None, :]).astype(float)
    np.testing.assert_array_equal(spectral_clusters(S), [0, 1, 2, 0, 1, 2])
    # Everybody alike: one eigenvalue 0, the rest 1 -> k = 1.
    np.testing.assert_array_equal(spectral_clusters(np.ones((4, 4))), [0, 0, 0, 0])
    np.testing.assert_array_equal(spectral_clusters(np.ones((1, 1))), [0])
    with pytest.raises(ValueError, match="max_k"):
        spectral_clusters(S, max_k=0)


def _planted_updates(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """3 tasks × 2 clients: a random task direction (norm ~14) plus small noise (norm ~1.4)."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(3, 200))
    order = np.array([0, 1, 2, 2, 0, 1])  # shuffled so that neighbours are not always peers
    return directions[order] + 0.1 * rng.normal(size=(6, 200)), order


def test_planted_structure_is_recovered():
    deltas, task = _planted_updates()
    S = cosine_matrix(deltas)
    expected = canonical_labels(task)  # [0, 1, 2, 2, 0, 1]
    np.testing.assert_array_equal(complete_linkage(S, threshold=0.5), expected)
    np.testing.assert_array_equal(complete_linkage(S, k=3), expected)
    np.testing.assert_array_equal(spectral_clusters(S), expected)
    W = mixing_weights(S, tau=0.5)
    for i in range(6):
        peer = next(j for j in range(6) if j != i and task[j] == task[i])
        others = [j for j in range(6) if task[j] != task[i]]
        assert W[i, peer] > 2 * W[i, others].max()


def test_peer_weights_by_hand():
    # Client 0's peers: 0.6 (same task) and four at 0.1. Mean 0.2, population std
    # sqrt((0.4² + 4·0.1²)/5) = 0.2, so z = [2, −0.5, −0.5, −0.5, −0.5]. τ = 1:
    # softmax = [e², e^−0.5 ×4] / (7.389056 + 4·0.606531) = [0.752820, 0.061795 ×4]; β = 0.5
    # halves it.
    S = np.full((6, 6), 0.1)
    np.fill_diagonal(S, 1.0)
    S[0, 1] = S[1, 0] = 0.6
    W = peer_weights(S, self_weight=0.5, tau=1.0)
    np.testing.assert_allclose(
        W[0], [0.5, 0.376410, 0.030898, 0.030898, 0.030898, 0.030898], atol=1e-6
    )
    # The same-task peer gets e^2.5 = 12.18 times any other-task client, and the rule is
    # scale-free: the same spread around another mean gives the same weights.
    assert W[0, 1] / W[0, 2] == pytest.approx(math.exp(2.5))
    np.testing.assert_allclose(peer_weights(0.5 * S + 0.2, 0.5)[0], W[0], atol=1e-12)
    np.testing.assert_allclose(W.sum(axis=1), 1.0)
    # Every peer of client 2 is at 0.1 (σ = 0), so its 1 − β = 0.5 is spread evenly.
    np.testing.assert_allclose(W[2], [0.1, 0.1, 0.5, 0.1, 0.1, 0.1])


def test_peer_weights_edges():
    np.testing.assert_array_equal(peer_weights(np.ones((1, 1)), 0.3), [[1.0]])
    # Two clients: the one peer takes all of 1 − β.
    np.testing.assert_allclose(
        peer_weights(np.array([[1, 0.2], [0.2, 1]]), 0.25), [[0.25, 0.75], [0.75, 0.25]]
    )
    # β = 1 is local training; β = 0 gives no self weight at all.
    S = np.array([[1, 0.9, 0.1], [0.9, 1, 0.2], [0.1, 0.2, 1]])
    np.testing.assert_array_equal(np.diag(peer_weights(S, 1.0)), [1, 1, 1])
    assert np.all(np.diag(peer_weights(S, 0.0)) == 0)
    with pytest.raises(ValueError, match="self_weight"):
        peer_weights(S, 1.5)
    with pytest.raises(ValueError, match="tau"):
        peer_weights(S, 0.5, tau=0)


def test_peer_affinity_and_its_spectrum_by_hand():
    # Two pairs, S = 0.5 inside a pair and 0.1 across. Row 0's peers [0.5, 0.1, 0.1]: mean 0.2333,
    # std (√2/3)·0.4, so z = [√2, −1/√2, −1/√2]. τ = 1, β = 0: weights ∝ [e^√2, e^−0.7071 ×2]
    # = [4.113250, 0.493069 ×2] / 5.099388 = [0.806616, 0.096692 ×2]. Every row alike, so the
    # affinity is symmetric with degree 1, and its eigenvalues are p + 2q = 1, p − 2q = 0.613232
    # and −p twice: L has 0, 0.386768, 1.806616, 1.806616. Largest gap after λ_2: k = 2.
    S = np.array([[1, 0.5, 0.1, 0.1], [0.5, 1, 0.1, 0.1], [0.1, 0.1, 1, 0.5], [0.1, 0.1, 0.5, 1]])
    p, q = 0.806616, 0.096692
    expected = np.array([[0, p, q, q], [p, 0, q, q], [q, q, 0, p], [q, q, p, 0]])
    np.testing.assert_allclose(peer_affinity(S, tau=1.0), expected, atol=1e-6)
    laplacian = np.eye(4) - peer_affinity(S, tau=1.0)
    np.testing.assert_allclose(
        np.linalg.eigvalsh(laplacian), [0, 0.386768, 1.806616, 1.806616], atol=1e-6
    )
    np.testing.assert_array_equal(spectral_clusters(S, tau=1.0), [0, 0, 1, 1])


# S measured on the bundled model (issue 11; README, similarity-weighted aggregation): 6 clients
# by task, clients 0/3 generation, 1/4 translation, 2/5 summarization, round 1.
S_B_ROUND_1 = np.array(  # B's update, 16 examples per client
    [
        [1.0, 0.075, 0.062, 0.272, 0.085, 0.061],
        [0.075, 1.0, 0.052, 0.045, 0.525, 0.031],
        [0.062, 0.052, 1.0, 0.02, 0.055, 0.384],
        [0.272, 0.045, 0.02, 1.0, 0.063, 0.017],
        [0.085, 0.525, 0.055, 0.063, 1.0, 0.034],
        [0.061, 0.031, 0.384, 0.017, 0.034, 1.0],
    ]
)
S_FACTORS_ROUND_1 = np.array(  # the concatenated factors, 8 examples per client
    [
        [1.0, 0.137, 0.091, 0.154, 0.15, 0.104],
        [0.137, 1.0, 0.06, 0.087, 0.485, 0.08],
        [0.091, 0.06, 1.0, 0.033, 0.092, 0.433],
        [0.154, 0.087, 0.033, 1.0, 0.06, 0.033],
        [0.15, 0.485, 0.092, 0.06, 1.0, 0.098],
        [0.104, 0.08, 0.433, 0.033, 0.098, 1.0],
    ]
)
TASKS = np.array([0, 1, 2, 0, 1, 2])


def _peer_ratio(W: np.ndarray, i: int) -> float:
    peer = (i + 3) % 6
    return W[i, peer] / max(W[i, j] for j in range(6) if TASKS[j] != TASKS[i])


def test_measured_similarities_give_the_same_task_peer_three_times_any_other():
    W = peer_weights(S_B_ROUND_1, self_weight=0.5, tau=1.0)
    assert min(_peer_ratio(W, i) for i in range(6)) > 8  # measured: 8.8 to 10.8
    old = mixing_weights(S_B_ROUND_1, tau=0.5)  # the rule before issue 11
    assert max(_peer_ratio(old, i) for i in range(6)) < 3  # measured: 1.5 to 2.5
    # On the factor cosines the generation pair (0.154) is no more similar than client 0's
    # cross-task 0.150: no rule can find it there, but translation and summarization stand out.
    W = peer_weights(S_FACTORS_ROUND_1, self_weight=0.5, tau=1.0)
    assert min(_peer_ratio(W, i) for i in (1, 2, 4, 5)) > 3 and _peer_ratio(W, 0) < 3


@pytest.mark.parametrize("S", [S_B_ROUND_1, S_FACTORS_ROUND_1], ids=["b", "factors"])
def test_measured_similarities_are_clustered_by_task(S):
    np.testing.assert_array_equal(spectral_clusters(S, tau=1.0), [0, 1, 2, 0, 1, 2])
