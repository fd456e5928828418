"""Hand-worked CoBa cases: even convergence, one slow task, one diverging task.

Conventions (see strategies/maths/coba.py): ℓ = loss / loss(start); 3-point slopes are
(y_2 − y_0) / 2; K = 2 tasks unless stated; window 3, warm-up 2; σ(z) = 1 / (1 + e^−z), and for
two entries softmax([a, b])[1] = σ(b − a).
"""

import math

import numpy as np
import pytest

from strategies.maths.coba import client_weights, coba_task_weights, coba_terms, slope


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def test_slope_by_hand():
    assert slope([1, 3, 5]) == pytest.approx(2.0)
    assert slope([1.0, 0.8, 0.9]) == pytest.approx(-0.05)  # (0.9 − 1.0) / 2
    # x − x̄ = [−1.5, −0.5, 0.5, 1.5], y − ȳ = [−0.5, 0.5, −0.5, 0.5]: 1.0 / 5 = 0.2.
    assert slope([0, 1, 0, 1]) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="at least 2"):
        slope([1.0])


def test_even_convergence_gives_uniform_weights():
    # Same ℓ = [1, 0.8, 0.6] for all three tasks even though raw losses differ in scale:
    # α = −0.2 each, so RCS = softmax(3·(−0.2)/0.6 each) and ACS are uniform, whatever DF is.
    histories = {"gen": [2.0, 1.6, 1.2], "trans": [4.0, 3.2, 2.4], "sum": [1.0, 0.8, 0.6]}
    weights = coba_task_weights(histories)
    assert weights == pytest.approx({"gen": 1 / 3, "trans": 1 / 3, "sum": 1 / 3})
    terms = coba_terms(histories)
    assert not terms.in_warmup
    np.testing.assert_allclose(terms.slopes, [-0.2, -0.2, -0.2])
    assert terms.df == pytest.approx(1.0)  # T = 1: 1·softmax([x])[0] = 1


def test_slow_task_gains_weight():
    # fast: ℓ = [1, 0.8, 0.6], α = −0.2;  slow: ℓ = [1, 0.9, 0.8], α = −0.1.
    # RCS = softmax(2·[−0.2, −0.1]/0.3) = softmax([−4/3, −2/3]) -> RCS_slow = σ(2/3) = 0.6607564.
    # ACS: N = 1, −1·α/|α| = 1 for both -> [0.5, 0.5].
    # DF: the slow task has the larger ℓ (0.8), T = 1 -> DF = 1, so the logits are 2·RCS:
    # ω_slow = σ(2·(RCS_slow − RCS_fast)) = σ(2·(2·0.6607564 − 1)) = σ(0.6430255) = 0.6554371.
    terms = coba_terms({"fast": [1.0, 0.8, 0.6], "slow": [1.0, 0.9, 0.8]})
    assert terms.tasks == ("fast", "slow")
    rcs_slow = sigmoid(2 / 3)
    np.testing.assert_allclose(terms.rcs, [1 - rcs_slow, rcs_slow])
    np.testing.assert_allclose(terms.acs, [0.5, 0.5])
    assert terms.df == pytest.approx(1.0)
    np.testing.assert_allclose(terms.weights, [1 - 0.6554371, 0.6554371], atol=1e-7)
    assert sigmoid(2 * (2 * rcs_slow - 1)) == pytest.approx(0.6554371, abs=1e-7)


DIVERGING = {"steady": [1.0, 0.8, 0.6, 0.4], "up": [1.0, 0.8, 0.9, 1.0]}


def test_diverging_task_loses_weight():
    # Slopes at rounds 2 and 3 (3-point windows):
    #   steady: (0.6 − 1)/2 = −0.2, (0.4 − 0.8)/2 = −0.2;
    #   up:     (0.9 − 1)/2 = −0.05, (1 − 0.8)/2 = 0.1.
    # RCS = softmax(2·[−0.2, 0.1]/0.3) = softmax([−4/3, 2/3]) -> RCS_up = σ(2) = 0.8807971.
    # ACS (N = 2): steady −2·(−0.2)/0.4 = 1; up −2·0.1/(0.05 + 0.1) = −4/3 -> ACS_up = σ(−7/3)
    #   = 0.0883997.
    # α_max: "up" has the larger ℓ at both rounds (0.9, 1.0) -> [−0.05, 0.1], T = 2, Σ|·| = 0.15;
    #   −5·2·[−0.05, 0.1]/0.15 = [10/3, −20/3] -> DF = 2·σ(−10) = 2/(1 + e¹⁰) = 9.0796e-5.
    # ω_up = σ(2·(DF·(2·0.8807971 − 1) + (1 − DF)·(2·0.0883997 − 1))) = σ(−1.6484) = 0.1616349.
    terms = coba_terms(DIVERGING)
    np.testing.assert_allclose(terms.slope_history, [[-0.2, -0.2], [-0.05, 0.1]], atol=1e-12)
    np.testing.assert_allclose(terms.alpha_max_history, [-0.05, 0.1], atol=1e-12)
    np.testing.assert_allclose(terms.rcs[1], sigmoid(2))
    np.testing.assert_allclose(terms.acs[1], sigmoid(-7 / 3))
    assert terms.df == pytest.approx(2 / (1 + math.exp(10)))
    np.testing.assert_allclose(terms.weights, [0.8383651, 0.1616349], atol=1e-7)


def test_floor_then_renormalise():
    # floor_factor 0.8 -> floor 0.8/2 = 0.4: ω = [0.8383651, max(0.1616349, 0.4)] / 1.2383651
    #   = [0.6769935, 0.3230065].
    weights = coba_task_weights(DIVERGING, floor_factor=0.8)
    assert weights == pytest.approx({"steady": 0.6769935, "up": 0.3230065}, abs=1e-7)


def test_uniform_during_warmup():
    terms = coba_terms({"a": [1.0, 0.5], "b": [1.0, 0.9]}, warmup=2)  # 2 points < warm-up + 1
    assert terms.in_warmup and terms.rcs is None and terms.df is None
    np.testing.assert_array_equal(terms.weights, [0.5, 0.5])
    np.testing.assert_allclose(terms.normalized_loss, [0.5, 0.9])
    # A window of 1 point never has a slope.
    assert coba_task_weights(DIVERGING, window=1) == {"steady": 0.5, "up": 0.5}


def test_bad_histories():
    with pytest.raises(ValueError, match="differ in length"):
        coba_terms({"a": [1.0, 0.9, 0.8], "b": [1.0, 0.9]})
    with pytest.raises(ValueError, match=r"'a'.*positive start"):
        coba_terms({"a": [0.0, 0.9, 0.8]})


def test_client_weights_by_hand():
    omega = {"gen": 0.5, "trans": 0.3, "sum": 0.2}
    counts = [{"gen": 10}, {"trans": 10, "sum": 10}, {"gen": 2, "sum": 5}]
    # Σ ω·n: 0.5·10 = 5; 0.3·10 + 0.2·10 = 5; 0.5·2 + 0.2·5 = 2 -> / 12.
    np.testing.assert_allclose(client_weights(counts, omega), [5 / 12, 5 / 12, 2 / 12])
    with pytest.raises(ValueError, match="'code'"):
        client_weights([{"code": 3}], omega)
    with pytest.raises(ValueError, match="-1 examples"):
        client_weights([{"gen": -1}], omega)
