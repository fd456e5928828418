"""Tests for strategies.maths.lora_products (the exact methods as factors), checked by hand and
against the dense oracles of tests/strategies/lora_oracles.py."""

import numpy as np
import pytest

from strategies.maths.lora_products import (
    flora_stack,
    lora_pairs,
    residual_factors,
    stacked_factors,
)
from tests.strategies.lora_oracles import factor_average_error, fedex_aggregate, product_average

# Two clients, rank 1, d_out = d_in = 2, chosen so every product is a unit matrix entry:
#   B1 A1 = [[1],[0]]·[[1,0]] = [[1,0],[0,0]],   B2 A2 = [[0],[1]]·[[0,1]] = [[0,0],[0,1]].
A1, B1 = np.array([[1.0, 0.0]]), np.array([[1.0], [0.0]])
A2, B2 = np.array([[0.0, 1.0]]), np.array([[0.0], [1.0]])


def _state(a, b, prefix="m.q_proj"):
    return {f"{prefix}.lora_A.weight": a, f"{prefix}.lora_B.weight": b}


def test_fedavg_factor_error_equals_hand_covariance():
    # p = (1/4, 3/4). Exact: 0.25·B1A1 + 0.75·B2A2 = diag(0.25, 0.75).
    # Ā = [[0.25, 0.75]], B̄ = [[0.25],[0.75]]: B̄Ā = [[0.0625, 0.1875],[0.1875, 0.5625]].
    # Error = exact − B̄Ā = [[0.1875, −0.1875],[−0.1875, 0.1875]]; for two clients the covariance
    # is p1·p2·(B1 − B2)(A1 − A2) = 0.1875·[[1],[−1]]·[[1, −1]], the same matrix.
    p = [1, 3]
    np.testing.assert_allclose(product_average([A1, A2], [B1, B2], p), [[0.25, 0], [0, 0.75]])
    expected = [[0.1875, -0.1875], [-0.1875, 0.1875]]
    np.testing.assert_allclose(factor_average_error([A1, A2], [B1, B2], p), expected)
    a_bar, b_bar, residual = fedex_aggregate([A1, A2], [B1, B2], p)
    np.testing.assert_allclose(a_bar, [[0.25, 0.75]])
    np.testing.assert_allclose(b_bar, [[0.25], [0.75]])
    np.testing.assert_allclose(residual, expected)


def test_flora_stack_by_hand_with_different_ranks():
    # Client 2 has rank 2: A2' = [[0,1],[1,1]], B2' = [[0,1],[1,0]]; p = (1/2, 1/2).
    a2, b2 = np.array([[0.0, 1.0], [1.0, 1.0]]), np.array([[0.0, 1.0], [1.0, 0.0]])
    a_stacked, b_stacked = flora_stack([A1, a2], [B1, b2], [1, 1])
    # A = [0.5·A1; 0.5·A2'] (3×2), B = [B1 B2'] (2×3).
    np.testing.assert_allclose(a_stacked, [[0.5, 0], [0, 0.5], [0.5, 0.5]])
    np.testing.assert_allclose(b_stacked, [[1, 0, 1], [0, 1, 0]])
    # B2'A2' = [[1,1],[0,1]], so the exact average is 0.5·[[1,0],[0,0]] + 0.5·[[1,1],[0,1]].
    np.testing.assert_allclose(b_stacked @ a_stacked, [[1.0, 0.5], [0.0, 0.5]])


def test_exact_methods_match_product_average_on_random_factors():
    rng = np.random.default_rng(7)
    d_out, d_in, p = 6, 5, [3.0, 1.0, 2.0, 4.0]
    As = [rng.normal(size=(3, d_in)) for _ in p]
    Bs = [rng.normal(size=(d_out, 3)) for _ in p]
    exact = sum(w / 10 * (b @ a) for w, a, b in zip(p, As, Bs, strict=True))
    a_bar, b_bar, residual = fedex_aggregate(As, Bs, p)
    np.testing.assert_allclose(b_bar @ a_bar + residual, exact, atol=1e-6)
    a_stacked, b_stacked = flora_stack(As, Bs, p)
    np.testing.assert_allclose(b_stacked @ a_stacked, exact, atol=1e-6)
    # And the trap is real: the factor average misses by far more than 1e-6.
    assert np.abs(b_bar @ a_bar - exact).max() > 0.1
    ranks = [1, 2, 4, 3]  # FLoRA with heterogeneous ranks
    As = [rng.normal(size=(r, d_in)) for r in ranks]
    Bs = [rng.normal(size=(d_out, r)) for r in ranks]
    exact = sum(w / 10 * (b @ a) for w, a, b in zip(p, As, Bs, strict=True))
    a_stacked, b_stacked = flora_stack(As, Bs, p)
    assert a_stacked.shape == (10, d_in) and b_stacked.shape == (d_out, 10)
    np.testing.assert_allclose(b_stacked @ a_stacked, exact, atol=1e-6)


def test_shared_a_has_no_factor_error_ffa_lora():
    # FFA-LoRA: A frozen and identical, so Σ p_k B_k A = B̄ A and the error is exactly 0.
    a = np.array([[1.0, 2.0]])
    error = factor_average_error(
        [a, a], [np.array([[1.0], [3.0]]), np.array([[5.0], [7.0]])], [1, 1]
    )
    np.testing.assert_array_equal(error, np.zeros((2, 2)))


def test_float32_inputs_give_float32_outputs():
    out = product_average([A1.astype(np.float32)], [B1.astype(np.float32)], [1])
    assert out.dtype == np.float32


def test_lora_pairs():
    state = {**_state(A1, B1, "m.v_proj"), **_state(A2, B2, "m.k_proj"), "m.norm.weight": A1}
    assert lora_pairs(state) == {
        "m.k_proj": ("m.k_proj.lora_A.weight", "m.k_proj.lora_B.weight"),
        "m.v_proj": ("m.v_proj.lora_A.weight", "m.v_proj.lora_B.weight"),
    }
    with pytest.raises(ValueError, match=r"'m\.q_proj' has lora_A but no lora_B"):
        lora_pairs({"m.q_proj.lora_A.weight": A1})


def test_stacked_and_residual_factors_by_hand():
    states = [_state(A1, B1), _state(A2, B2)]
    # p = (1/2, 1/2): exact = diag(0.5, 0.5). Ā = [[0.5, 0.5]], B̄ = [[0.5], [0.5]], so
    # B̄Ā = 0.25·ones and the residual is p1·p2·(B1−B2)(A1−A2) = [[0.25,−0.25],[−0.25,0.25]].
    b, a = stacked_factors(states, [1, 1])["m.q_proj"]
    np.testing.assert_allclose(b, [[1, 0], [0, 1]])
    np.testing.assert_allclose(a, [[0.5, 0], [0, 0.5]])
    mean = _state(np.array([[0.5, 0.5]]), np.array([[0.5], [0.5]]))
    b, a = residual_factors(states, [1, 1], mean)["m.q_proj"]
    assert b.shape == (2, 3) and a.shape == (3, 2)  # rank K + 1
    np.testing.assert_allclose(b @ a, [[0.25, -0.25], [-0.25, 0.25]])


def test_residual_factors_match_the_fedex_oracle_on_random_factors():
    rng = np.random.default_rng(3)
    p = [2.0, 1.0, 5.0]
    states = [_state(rng.normal(size=(2, 4)), rng.normal(size=(3, 2))) for _ in p]
    As = [s["m.q_proj.lora_A.weight"] for s in states]
    Bs = [s["m.q_proj.lora_B.weight"] for s in states]
    a_bar, b_bar, residual = fedex_aggregate(As, Bs, p)
    b, a = residual_factors(states, p, _state(a_bar, b_bar))["m.q_proj"]
    np.testing.assert_allclose(b @ a, residual, atol=1e-12)


def test_stacking_errors():
    with pytest.raises(ValueError, match="not a LoRA product"):
        flora_stack([A1], [np.zeros((2, 3))], [1])
    with pytest.raises(ValueError, match="2 A factors, 1 B factors"):
        flora_stack([A1, A2], [B1], [1, 1])
