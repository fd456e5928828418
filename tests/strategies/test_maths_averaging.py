"""Hand-worked tests for strategies.maths.averaging (fedavg weights, flattening) and the
LoRA key layout of colora.keys (HetLoRA ranks)."""

import numpy as np
import pytest

from colora.keys import lora_key, lora_rank, split_lora_key, truncate_rank, zero_pad_rank
from strategies.maths.averaging import (
    flatten_state,
    normalized_weights,
    unflatten_state,
    weighted_average,
)

A_KEY = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
B_KEY = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"


def test_normalized_weights_by_hand():
    # n = (1, 3): p = (1/4, 3/4).  n = (2, 2, 4): sum 8, p = (1/4, 1/4, 1/2).
    np.testing.assert_array_equal(normalized_weights([1, 3]), [0.25, 0.75])
    np.testing.assert_array_equal(normalized_weights([2, 2, 4]), [0.25, 0.25, 0.5])
    assert normalized_weights([5]).dtype == np.float64


@pytest.mark.parametrize(
    ("weights", "message"),
    [([], "empty"), ([1.0, -1.0], "non-negative"), ([np.nan, 1.0], "NaN"), ([0, 0], "zero")],
)
def test_normalized_weights_rejects_bad_input(weights, message):
    with pytest.raises(ValueError, match=message):
        normalized_weights(weights)


def test_weighted_average_by_hand_keeps_float32():
    s0 = {"w": np.array([[1, 2], [3, 4]], np.float32), "b": np.array([0.0], np.float32)}
    s1 = {"w": np.array([[5, 6], [7, 8]], np.float32), "b": np.array([4.0], np.float32)}
    # p = (1/4, 3/4): w = 0.25·[[1,2],[3,4]] + 0.75·[[5,6],[7,8]] = [[4,5],[6,7]]; b = 0.75·4 = 3.
    out = weighted_average([s0, s1], [10, 30])
    np.testing.assert_allclose(out["w"], [[4, 5], [6, 7]])
    np.testing.assert_allclose(out["b"], [3.0])
    assert out["w"].dtype == np.float32 and set(out) == {"w", "b"}


def test_weighted_average_names_the_bad_key():
    good = {"w": np.zeros((2, 2)), "b": np.zeros(1)}
    with pytest.raises(ValueError, match="'b'"):
        weighted_average([good, {"w": np.zeros((2, 2))}], [1, 1])
    with pytest.raises(ValueError, match=r"'w'.*shape"):
        weighted_average([good, {"w": np.zeros((2, 3)), "b": np.zeros(1)}], [1, 1])
    with pytest.raises(ValueError, match="2 states but 1 weights"):
        weighted_average([good, good], [1])


def test_flatten_and_unflatten_by_hand():
    state = {"b": np.array([[1.0, 2.0]], np.float32), "a": np.array([3.0], np.float32)}
    # Sorted keys: a then b -> [3, 1, 2]; with keys=("b", "a") -> [1, 2, 3].
    np.testing.assert_array_equal(flatten_state(state), [3, 1, 2])
    np.testing.assert_array_equal(flatten_state(state, ["b", "a"]), [1, 2, 3])
    back = unflatten_state(np.array([9.0, 8.0, 7.0]), state)
    np.testing.assert_array_equal(back["a"], [9.0])
    np.testing.assert_array_equal(back["b"], [[8.0, 7.0]])
    assert back["b"].dtype == np.float32
    with pytest.raises(ValueError, match="4 elements"):
        unflatten_state(np.zeros(4), state)


def test_split_lora_key():
    assert split_lora_key(A_KEY) == ("base_model.model.model.layers.0.self_attn.q_proj", "A")
    assert split_lora_key("m.v_proj.lora_B.default.weight") == ("m.v_proj", "B")
    assert split_lora_key("m.v_proj.base_layer.weight") is None
    assert split_lora_key(lora_key("m.v_proj", "B")) == ("m.v_proj", "B")
    assert lora_key("m.q_proj", "A") == "m.q_proj.lora_A.weight"
    with pytest.raises(ValueError, match="'A' or 'B'"):
        lora_key("m.q_proj", "C")


def test_zero_pad_and_truncate_rank_by_hand():
    state = {
        A_KEY: np.array([[1.0, 2.0]]),  # r=1, d_in=2
        B_KEY: np.array([[3.0], [4.0]]),  # d_out=2, r=1
        "score.weight": np.array([7.0]),
    }
    assert lora_rank(state) == 1
    padded = zero_pad_rank(state, 3)
    np.testing.assert_array_equal(padded[A_KEY], [[1, 2], [0, 0], [0, 0]])
    np.testing.assert_array_equal(padded[B_KEY], [[3, 0, 0], [4, 0, 0]])
    np.testing.assert_array_equal(padded["score.weight"], [7.0])
    # B·A is unchanged by zero padding: [[3],[4]]·[[1,2]] = [[3,6],[4,8]].
    np.testing.assert_array_equal(padded[B_KEY] @ padded[A_KEY], [[3, 6], [4, 8]])
    assert lora_rank(padded) == 3
    back = truncate_rank(padded, 1)
    np.testing.assert_array_equal(back[A_KEY], [[1, 2]])
    np.testing.assert_array_equal(back[B_KEY], [[3], [4]])


def test_rank_errors():
    state = {A_KEY: np.zeros((2, 4)), B_KEY: np.zeros((3, 2))}
    with pytest.raises(ValueError, match="truncate_rank"):
        zero_pad_rank(state, 1)
    with pytest.raises(ValueError, match="zero_pad_rank"):
        truncate_rank(state, 3)
    with pytest.raises(ValueError, match="mixes LoRA ranks"):
        lora_rank({A_KEY: np.zeros((2, 4)), B_KEY: np.zeros((3, 1))})
    with pytest.raises(ValueError, match="no lora_A"):
        lora_rank({"w": np.zeros(2)})
