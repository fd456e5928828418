"""Hand-worked FedAdam / FedYogi steps (Reddi et al. 2021, Algorithm 2) on a 2-element vector."""

import math

import numpy as np
import pytest

from strategies.maths.server_opt import OptimizerState, fedadam_step, fedyogi_step

HYPER = {"eta": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 0.01}
X = {"w": np.array([1.0, 2.0])}
DELTA = {"w": np.array([0.1, -0.2])}


def test_fedadam_first_step_by_hand():
    # m = 0.1·Δ = [0.01, −0.02];  v = 0.99·τ² + 0.01·Δ² = [0.99e-4 + 1e-4, 0.99e-4 + 4e-4]
    #   = [1.99e-4, 4.99e-4];  x += 0.1·m / (√v + 0.01)
    #   = [1 + 0.001/(0.0141067 + 0.01), 2 − 0.002/(0.0223383 + 0.01)] = [1.0414822, 1.9381538].
    new_x, state = fedadam_step(X, DELTA, None, **HYPER)
    np.testing.assert_allclose(state.m["w"], [0.01, -0.02], rtol=1e-12)
    np.testing.assert_allclose(state.v["w"], [1.99e-4, 4.99e-4], rtol=1e-12)
    np.testing.assert_allclose(new_x["w"], [1.0414822, 1.9381538], atol=1e-7)
    assert state.step == 1


def test_fedyogi_two_steps_by_hand():
    # Step 1: v_old = τ² = 1e-4 < Δ² = [0.01, 0.04], so sign(v − Δ²) = −1 and
    #   v = 1e-4 + 0.01·Δ² = [2e-4, 5e-4]; √v = 0.01·[√2, √5].
    #   x += 0.1·[0.01, −0.02] / (0.01·[√2 + 1, √5 + 1]) = [0.1(√2 − 1), −0.05(√5 − 1)]
    #      = [0.0414214, −0.0618034].
    x1, state = fedyogi_step(X, DELTA, None, **HYPER)
    np.testing.assert_allclose(state.v["w"], [2e-4, 5e-4], rtol=1e-12)
    np.testing.assert_allclose(
        x1["w"], [1 + 0.1 * (math.sqrt(2) - 1), 2 - 0.05 * (math.sqrt(5) - 1)], rtol=1e-12
    )
    # Step 2 with Δ = [0.01, 0]: now v > Δ² = [1e-4, 0], sign = +1, so Yogi *lowers* v:
    #   v = [2e-4 − 0.01·1e-4, 5e-4 − 0] = [1.99e-4, 5e-4]
    #   (Adam would give 0.99·[1.99e-4, 4.99e-4] + 0.01·[1e-4, 0] = [1.9801e-4, 4.9401e-4]).
    #   m = 0.9·[0.01, −0.02] + 0.1·[0.01, 0] = [0.01, −0.018].
    x2, state = fedyogi_step(x1, {"w": np.array([0.01, 0.0])}, state, **HYPER)
    np.testing.assert_allclose(state.m["w"], [0.01, -0.018], rtol=1e-12)
    np.testing.assert_allclose(state.v["w"], [1.99e-4, 5e-4], rtol=1e-12)
    step = [0.001 / (math.sqrt(1.99e-4) + 0.01), -0.0018 / (math.sqrt(5e-4) + 0.01)]
    np.testing.assert_allclose(x2["w"], x1["w"] + step, rtol=1e-12)
    assert state.step == 2
    _, adam_state = fedadam_step(X, DELTA, None, **HYPER)
    _, adam_state = fedadam_step(X, {"w": np.array([0.01, 0.0])}, adam_state, **HYPER)
    np.testing.assert_allclose(adam_state.v["w"], [1.9801e-4, 4.9401e-4], rtol=1e-12)


def test_initial_state_and_checkpoint_round_trip():
    x = {"a": np.ones((2, 2), np.float32), "b": np.zeros(3, np.float32)}
    state = OptimizerState.initial(x, tau=0.01)
    np.testing.assert_allclose(state.v["a"], np.full((2, 2), 1e-4))
    np.testing.assert_array_equal(state.m["b"], np.zeros(3))
    new_x, state = fedadam_step(x, {"a": np.ones((2, 2)), "b": np.ones(3)}, state, **HYPER)
    assert new_x["a"].dtype == np.float32
    arrays = state.to_arrays()
    assert set(arrays) == {"m/a", "m/b", "v/a", "v/b", "step"}
    restored = OptimizerState.from_arrays(arrays)
    assert restored.step == 1
    np.testing.assert_array_equal(restored.m["a"], state.m["a"])
    np.testing.assert_array_equal(restored.v["b"], state.v["b"])
    with pytest.raises(ValueError, match="step"):
        OptimizerState.from_arrays({"m/a": np.zeros(1), "v/a": np.zeros(1)})


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="beta1"):
        fedadam_step(X, DELTA, None, eta=0.1, beta1=1.0, beta2=0.99, tau=0.01)
    with pytest.raises(ValueError, match="tau"):
        fedyogi_step(X, DELTA, None, eta=0.1, beta1=0.9, beta2=0.99, tau=0.0)
    with pytest.raises(ValueError, match="'v'"):
        fedadam_step(X, {"v": np.zeros(2)}, None, **HYPER)
    with pytest.raises(ValueError, match=r"'w'.*shape"):
        fedadam_step(X, {"w": np.zeros(3)}, None, **HYPER)
