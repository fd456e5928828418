"""Tests for strategies.maths.update_measures: what an update's similarity is measured on."""

import numpy as np
import pytest

from strategies.maths.averaging import flatten_state
from strategies.maths.similarity import cosine_matrix
from strategies.maths.update_measures import (
    GROUP,
    PROJECTION_WIDTH,
    UpdateMeasure,
    lora_modules,
    projection,
)

Q = "m.layers.0.q_proj"
V = "m.layers.0.v_proj"


def _shapes(state):
    return {key: value.shape for key, value in state.items()}


def _features(measure, theta, sent):
    m = UpdateMeasure(measure, _shapes(theta))
    out = np.empty(m.size, np.float64)
    return m.features(flatten_state(theta), flatten_state(sent), out=out)


def _state(a_q, b_q, a_v, b_v):
    return {
        f"{Q}.lora_A.weight": np.asarray(a_q, np.float64),
        f"{Q}.lora_B.weight": np.asarray(b_q, np.float64),
        f"{V}.lora_A.weight": np.asarray(a_v, np.float64),
        f"{V}.lora_B.weight": np.asarray(b_v, np.float64),
    }


# Rank 1, q: 2x2, v: 1x3. Sorted keys: q.A (1x2), q.B (2x1), v.A (1x3), v.B (1x1).
SENT = _state([[1, 0]], [[0], [0]], [[1, 1, 0]], [[0]])
THETA = _state([[1, 2]], [[1], [3]], [[0, 1, 1]], [[2]])


def test_layout_follows_the_sorted_flat_adapter():
    q, v = lora_modules(_shapes(THETA))
    assert (q.a, q.a_shape, q.b, q.b_shape) == (slice(0, 2), (1, 2), slice(2, 4), (2, 1))
    assert (v.a, v.a_shape, v.b, v.b_shape) == (slice(4, 7), (1, 3), slice(7, 8), (1, 1))


def test_factors_and_b_by_hand():
    # θ − θ⁰ = [0, 2 | 1, 3 | −1, 0, 1 | 2]; B's entries are [1, 3] and [2].
    np.testing.assert_array_equal(_features("factors", THETA, SENT), [0, 2, 1, 3, -1, 0, 1, 2])
    np.testing.assert_array_equal(_features("b", THETA, SENT), [1, 3, 2])


def test_product_is_the_exact_delta_w_when_d_in_fits_the_projection():
    # d_in = 2 and 3 <= m = 16, so Ω = I. B⁰ = 0, so ΔW = B A:
    # q: [[1], [3]] @ [[1, 2]] = [[1, 2], [3, 6]];  v: [[2]] @ [[0, 1, 1]] = [[0, 2, 2]].
    np.testing.assert_array_equal(_features("product", THETA, SENT), [1, 2, 3, 6, 0, 2, 2])
    # With a non-zero start the update is B A − B⁰ A⁰: swap the roles and it changes sign.
    np.testing.assert_array_equal(_features("product", SENT, THETA), [-1, -2, -3, -6, 0, -2, -2])


def _random_lora(rng, modules, d_out, d_in, rank):
    state = {}
    for i in range(modules):
        state[f"m.layers.{i}.proj.lora_A.weight"] = rng.normal(size=(rank, d_in))
        state[f"m.layers.{i}.proj.lora_B.weight"] = rng.normal(size=(d_out, rank))
    return state


def _regauge(state, rng):
    """(B G, G⁻¹ A): the same B A in another gauge of the factorisation."""
    out = {}
    for key in sorted(state):
        if key.endswith("lora_A.weight"):
            b_key = key.replace("lora_A", "lora_B")
            G = rng.normal(size=(state[key].shape[0],) * 2) + 3 * np.eye(state[key].shape[0])
            out[key] = np.linalg.solve(G, state[key])
            out[b_key] = state[b_key] @ G
    return out


def test_product_sees_the_model_not_the_gauge_and_factors_do_not():
    rng = np.random.default_rng(0)
    sent = {k: np.zeros_like(v) for k, v in _random_lora(rng, 4, 40, 50, 3).items()}
    theta = _random_lora(rng, 4, 40, 50, 3)
    same_model = _regauge(theta, rng)
    product = np.stack([_features("product", s, sent) for s in (theta, same_model)])
    factors = np.stack([_features("factors", s, sent) for s in (theta, same_model)])
    np.testing.assert_allclose(cosine_matrix(product)[0, 1], 1.0, atol=1e-12)
    assert cosine_matrix(factors)[0, 1] < 0.9


def test_sketched_product_cosine_is_within_the_stated_bound():
    # d_in = 200 > m = 16: the sketch is random (fixed seeds). 100 modules sharing the update
    # about evenly gives ρ ≈ 1/100; the docstring bounds the standard deviation of each inner
    # product of unit-norm updates by √(2ρ/m) = 0.035. Four of those bound the cosine error.
    rng = np.random.default_rng(1)
    sent = {k: np.zeros_like(v) for k, v in _random_lora(rng, 100, 30, 200, 2).items()}
    x = _random_lora(rng, 100, 30, 200, 2)
    noise = _random_lora(rng, 100, 30, 200, 2)
    y = {k: x[k] + 0.8 * noise[k] for k in x}
    exact = []
    for s in (x, y):
        modules = sorted(k.removesuffix(".lora_A.weight") for k in s if "lora_A" in k)
        exact.append(
            np.concatenate(
                [(s[f"{m}.lora_B.weight"] @ s[f"{m}.lora_A.weight"]).ravel() for m in modules]
            )
        )
    true = cosine_matrix(np.stack(exact))[0, 1]
    sketched = cosine_matrix(np.stack([_features("product", s, sent) for s in (x, y)]))[0, 1]
    assert abs(sketched - true) < 4 * np.sqrt(2 / 100 / PROJECTION_WIDTH)
    assert 0.2 < true < 0.9  # a pair that is neither parallel nor orthogonal


def test_projection_is_seeded_and_read_only():
    np.testing.assert_array_equal(projection(3, 100), projection(3, 100))
    assert not np.array_equal(projection(3, 100), projection(4, 100))
    assert projection(0, 5).shape == (5, 5) and projection(0, 100).shape == (100, 16)
    assert not projection(0, 100).flags.writeable


def test_bad_measures_and_layouts_are_refused():
    with pytest.raises(ValueError, match="measure must be one of"):
        UpdateMeasure("cosine", _shapes(THETA))
    with pytest.raises(ValueError, match="needs LoRA factors"):
        UpdateMeasure("product", {"head.weight": (2, 2)})
    assert UpdateMeasure("factors", {"head.weight": (2, 2)}).size == 4
    with pytest.raises(ValueError, match="not a LoRA product"):
        lora_modules({f"{Q}.lora_A.weight": (2, 3), f"{Q}.lora_B.weight": (4, 1)})


@pytest.mark.parametrize("measure", ["product", "b", "factors"])
def test_rows_at_once_give_the_bits_of_one_row_at_a_time(measure):
    # Several rows of a round (shared or personal sent adapters, the cached sent sketch reused
    # across calls) give exactly what each row alone gives.
    rng = np.random.default_rng(3)
    shapes = {
        f"{Q}.lora_A.weight": (3, 40),
        f"{Q}.lora_B.weight": (24, 3),
        f"{V}.lora_A.weight": (3, 8),
        f"{V}.lora_B.weight": (5, 3),
    }
    size = sum(int(np.prod(s)) for s in shapes.values())
    thetas = rng.standard_normal((5, size)).astype(np.float32)
    shared, own = rng.standard_normal(size).astype(np.float32), rng.standard_normal(size)
    sents = [shared, own.astype(np.float32), shared, shared, own.astype(np.float32)]
    batched = UpdateMeasure(measure, shapes)
    rows = np.empty((5, batched.size), np.float32)
    batched.features_rows(thetas[:2], sents[:2], rows[:2])
    batched.features_rows(thetas[2:], sents[2:], rows[2:])
    for theta, sent, row in zip(thetas, sents, rows, strict=True):
        alone = UpdateMeasure(measure, shapes)
        one = alone.features(theta, sent, out=np.empty(alone.size, np.float32))
        np.testing.assert_array_equal(row, one)
        if measure == "product":  # and a row is B (A Ω) - B⁰ (A⁰ Ω), module by module
            expected = []
            for index, module in enumerate(alone.modules):
                omega = projection(index, module.a_shape[1])

                def product(flat, module=module, omega=omega):
                    a = flat[module.a].reshape(module.a_shape).astype(np.float64)
                    b = flat[module.b].reshape(module.b_shape).astype(np.float64)
                    return b @ (a @ omega)

                expected.append((product(theta) - product(sent)).ravel())
            np.testing.assert_allclose(one, np.concatenate(expected), rtol=1e-5, atol=1e-5)


def test_threads_sharing_the_module_groups_give_the_bits_of_one_thread(monkeypatch):
    # Three shapes, one of them in 2 * GROUP + 1 modules (three groups of that shape), so each
    # of two threads takes groups of several shapes and a part-filled group; personal sent
    # adapters, as similarity-weighted sends from round 2 on.
    rng = np.random.default_rng(5)
    shapes = {}
    for layer in range(2 * GROUP + 1):
        shapes[f"m.layers.{layer:02d}.q_proj.lora_A.weight"] = (4, 48)
        shapes[f"m.layers.{layer:02d}.q_proj.lora_B.weight"] = (32, 4)
    for layer in range(3):
        shapes[f"m.layers.{layer:02d}.up_proj.lora_A.weight"] = (4, 32)
        shapes[f"m.layers.{layer:02d}.up_proj.lora_B.weight"] = (64, 4)
        shapes[f"m.layers.{layer:02d}.v_proj.lora_A.weight"] = (4, 8)
        shapes[f"m.layers.{layer:02d}.v_proj.lora_B.weight"] = (16, 4)
    size = sum(int(np.prod(s)) for s in shapes.values())
    thetas = rng.standard_normal((6, size)).astype(np.float32)
    sents = [rng.standard_normal(size).astype(np.float32) for _ in range(6)]
    rows = {}
    for workers in (1, 2):
        monkeypatch.setattr("strategies.maths.reproducible.WORKERS", workers)
        measure = UpdateMeasure("product", shapes)
        assert len(measure._groups) == 5  # q: 8 + 8 + 1, up: 3, v: 3
        rows[workers] = measure.features_rows(
            thetas, sents, np.empty((6, measure.size), np.float32)
        )
    np.testing.assert_array_equal(rows[2], rows[1])
