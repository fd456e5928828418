"""The wire codecs: hand-worked values, error bounds, strict decoding, layout independence."""

from __future__ import annotations

import numpy as np
import pytest

from colora.codec import SCALE_SUFFIX, CodecError, decode, encode, roundtrip

KEY = "layer.lora_A.weight"


def test_bf16_keeps_the_upper_half_rounded_to_nearest_even():
    x = np.array([1.0, -2.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, 0.0], dtype=np.float32)
    q = encode({KEY: x}, "bf16", 64)[KEY]
    # 1.0 = 0x3F800000; ties (1 + 2^-8 is halfway between 1 and 1 + 2^-7) go to the even one.
    assert q.tolist() == [0x3F80, 0xC000, 0x3F80, 0x3F82, 0x3F81, 0x0000]
    assert roundtrip({KEY: x}, "bf16", 64)[KEY].tolist() == [
        1.0, -2.0, 1.0, 1 + 2**-6, 1 + 2**-7, 0.0,
    ]  # fmt: skip


def test_int8_rows_of_block_values_with_absmax_scales():
    x = np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]], dtype=np.float32)  # rows of 4: [1,-2,.5,0]
    wire = encode({KEY: x}, "int8", 4)
    s = np.float32(2.0) / np.float32(127)
    assert wire[KEY + SCALE_SUFFIX].tolist() == [s, 1.0]  # an all-zero row gets scale 1
    # 1/s = 63.5 -> 64 (ties to even), -2/s = -127, 0.5/s = 31.75 -> 32.
    assert wire[KEY].tolist() == [[64, -127, 32], [0, 0, 0]]
    assert wire[KEY].shape == x.shape and wire[KEY].dtype == np.int8
    back = roundtrip({KEY: x}, "int8", 4)[KEY]
    steps = np.array([[s, s, s], [s, 1, 1]], dtype=np.float32)  # element 3 is in row 0
    np.testing.assert_array_equal(back, np.array([[64, -127, 32], [0, 0, 0]], np.float32) * steps)


@pytest.mark.parametrize("block", [1, 7, 64, 1000])
def test_int8_error_is_at_most_half_a_step(block):
    x = np.random.default_rng(block).normal(size=(33, 17)).astype(np.float32)
    wire = encode({KEY: x}, "int8", block)
    step = np.repeat(wire[KEY + SCALE_SUFFIX], block)[: x.size].reshape(x.shape)
    error = np.abs(roundtrip({KEY: x}, "int8", block)[KEY] - x)
    assert np.all(error <= step / 2 * (1 + 1e-6))


def test_bf16_relative_error_is_at_most_2_to_the_minus_8():
    x = np.random.default_rng(0).normal(size=10_000).astype(np.float32)
    back = roundtrip({KEY: x}, "bf16", 64)[KEY]
    assert np.max(np.abs(back - x) / np.abs(x)) <= 2**-8


@pytest.mark.parametrize("codec", ["fp32", "bf16", "int8"])
def test_encoding_does_not_depend_on_memory_layout(codec):
    x = np.random.default_rng(1).normal(size=(8, 96)).astype(np.float32)
    reference = encode({KEY: x}, codec, 64)
    for offset in (4, 8, 12, 20):
        raw = np.zeros(x.nbytes + 64, dtype=np.uint8)
        view = raw[offset : offset + x.nbytes].view(np.float32).reshape(x.shape)
        view[...] = x
        for key, value in encode({KEY: view}, codec, 64).items():
            assert value.tobytes() == reference[key].tobytes()
    fortran = np.asfortranarray(x)
    assert encode({KEY: fortran}, codec, 64)[KEY].tobytes() == reference[KEY].tobytes()


def _int8_wire(**changes):
    x = np.ones((2, 8), dtype=np.float32)
    wire = encode({KEY: x}, "int8", 4)
    wire.update(changes)
    return wire


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (_int8_wire(**{KEY + SCALE_SUFFIX: np.array([1, 0, 1, 1], np.float32)}), "zero scale"),
        (_int8_wire(**{KEY + SCALE_SUFFIX: np.array([1, np.nan, 1, 1], np.float32)}), "NaN"),
        (_int8_wire(**{KEY + SCALE_SUFFIX: np.array([1, -1, 1, 1], np.float32)}), "> 0"),
        (_int8_wire(**{KEY + SCALE_SUFFIX: np.ones(3, np.float32)}), "scales must be"),
        (_int8_wire(**{KEY + SCALE_SUFFIX: np.ones(4, np.float64)}), "scales must be"),
        (_int8_wire(**{KEY: np.ones((2, 9), np.int8)}), "payload must be int8 (2, 8)"),
        (_int8_wire(**{KEY: np.ones((2, 8), np.float32)}), "payload must be int8"),
        (_int8_wire(**{"other": np.ones(1, np.int8)}), "keys differ"),
        ({KEY: np.ones((2, 8), np.int8)}, "keys differ"),
    ],
)
def test_int8_decoding_rejects_a_malformed_payload(wire, reason):
    with pytest.raises(CodecError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        decode(wire, {KEY: (2, 8)}, "int8", 4)


@pytest.mark.parametrize(
    ("codec", "payload"),
    [
        ("bf16", np.ones((2, 8), np.float32)),
        ("bf16", np.ones((2, 7), np.uint16)),
        ("fp32", np.ones((2, 8), np.float64)),
        ("fp32", np.ones((8, 2), np.float32)),
    ],
)
def test_bf16_and_fp32_decoding_reject_a_wrong_dtype_or_shape(codec, payload):
    with pytest.raises(CodecError):
        decode({KEY: payload}, {KEY: (2, 8)}, codec, 4)


def test_an_unknown_codec_is_an_error():
    with pytest.raises(CodecError, match="unknown codec 'zip'"):
        encode({KEY: np.ones(2, np.float32)}, "zip", 4)
