"""colora.wire: the fast Array serialiser writes exactly what Flower's np.save path writes."""

import numpy as np
import pytest
from flwr.app import Array
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from colora.contract import decode_array
from colora.wire import to_array, to_numpy, to_record

DTYPES = st.one_of(
    hnp.floating_dtypes(endianness="="),
    hnp.integer_dtypes(endianness="?"),
    hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.boolean_dtypes(),
    hnp.complex_number_dtypes(endianness="="),
)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)))
def test_to_array_is_byte_for_byte_flowers_array(array):
    fast, flower = to_array(array), Array(np.ascontiguousarray(array))
    assert (fast.data, fast.dtype, fast.shape, fast.stype) == (
        flower.data,
        flower.dtype,
        flower.shape,
        flower.stype,
    )


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_non_contiguous_arrays_are_written_in_c_order(layout):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    array = {"C": base, "F": np.asfortranarray(base), "strided": base[:, ::2]}[layout]
    np.testing.assert_array_equal(to_array(array).numpy(), array)


def test_a_record_round_trips_and_passes_the_reply_contract():
    state = {"a": np.ones((8, 576), np.float32), "b": np.arange(3, dtype=np.int64)}
    record = to_record(state)
    for key, value in to_numpy(record).items():
        np.testing.assert_array_equal(value, state[key])
        np.testing.assert_array_equal(decode_array(record[key], key), state[key])
