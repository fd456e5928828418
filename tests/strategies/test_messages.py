"""The shared message helpers: the fast .npy view must equal Flower's own deserialisation."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from strategies.messages import array_view, arrays_of, record_rank, select_factors
from tests.strategies.fakes import RANK, lora_state

CASES = [
    np.arange(6, dtype=np.float32).reshape(2, 3),
    np.ones((), dtype=np.float64),
    np.zeros((0, 4), dtype=np.float32),
    np.arange(5, dtype=np.int64),
    np.ones((3, 1, 2), dtype=np.float16),
    np.asfortranarray(np.arange(6.0).reshape(2, 3)),  # not the fast path: falls back
]


@pytest.mark.parametrize("value", CASES, ids=lambda v: f"{v.dtype}{v.shape}")
def test_array_view_equals_array_numpy(value):
    array = Array(value)
    view = array_view(array)
    expected = array.numpy()
    assert view.dtype == expected.dtype and view.shape == expected.shape
    np.testing.assert_array_equal(view, expected)


def test_truncated_payload_is_left_to_numpy_to_reject():
    array = Array(np.arange(6, dtype=np.float32))
    array.data = array.data[:-4]
    with pytest.raises(ValueError):
        array_view(array)


def test_record_helpers():
    state = lora_state(np.random.default_rng(0))
    record = ArrayRecord({k: Array(v) for k, v in state.items()})
    assert record_rank(record) == RANK
    assert set(select_factors(record, ["A"])) == {k for k in state if "lora_A" in k}
    assert all(np.array_equal(v, state[k]) for k, v in arrays_of(record).items())
