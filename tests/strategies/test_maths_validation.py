"""Tests for strategies.maths.validation: every rejection reason names the offending key."""

import numpy as np
import pytest

from strategies.maths.validation import check_rank_compatible, check_update

A, B = "m.q_proj.lora_A.weight", "m.q_proj.lora_B.weight"
A2, B2 = "m.v_proj.lora_A.weight", "m.v_proj.lora_B.weight"


def _reference() -> dict[str, np.ndarray]:
    # Rank 2, d_in = 4, d_out = 3. Bytes: (8 + 6 + 3) float32 values · 4 = 68.
    return {
        A: np.zeros((2, 4), np.float32),
        B: np.zeros((3, 2), np.float32),
        "bias": np.zeros(3, np.float32),
    }


def test_accepts_a_matching_update():
    assert check_update(_reference(), _reference()) is None
    assert check_update(_reference(), _reference(), max_bytes=68) is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda u: u.pop("bias"), "missing key 'bias'"),
        (lambda u: u.update(extra=np.zeros(1, np.float32)), "unexpected key 'extra'"),
        (
            lambda u: u.update({A: np.zeros((2, 5), np.float32)}),
            "expected shape (2, 4), got (2, 5)",
        ),
        (lambda u: u.update({A: np.zeros((2, 4))}), "expected dtype float32, got float64"),
        (lambda u: u.update({B: np.full((3, 2), np.nan, np.float32)}), "NaN or Inf (6 non-finite"),
        (
            lambda u: u.update(bias=np.array([0, np.inf, 0], np.float32)),
            "'bias' contains NaN or Inf",
        ),
        (lambda u: u.update(bias=[0.0, 0.0, 0.0]), "expected a numpy array, got list"),
    ],
)
def test_rejections_name_the_key(change, expected):
    update = _reference()
    change(update)
    reason = check_update(update, _reference())
    assert reason is not None and expected in reason


def test_payload_limit():
    reason = check_update(_reference(), _reference(), max_bytes=67)
    assert reason == "payload is 68 bytes, over the limit of 67 bytes"


def test_rank_compatible_accepts_smaller_rank():
    small = {
        A: np.zeros((1, 4), np.float32),
        B: np.zeros((3, 1), np.float32),
        "bias": np.zeros(3, np.float32),
    }
    assert check_rank_compatible(small, _reference()) is None
    assert "expected shape (2, 4), got (1, 4)" in check_update(small, _reference())
    big = {
        A: np.zeros((3, 4), np.float32),
        B: np.zeros((3, 3), np.float32),
        "bias": np.zeros(3, np.float32),
    }
    assert "rank 3 is outside 1..2" in check_rank_compatible(big, _reference())
    wrong_d_in = dict(small, **{A: np.zeros((1, 5), np.float32)})
    assert "expected shape (1, 4), got (1, 5)" in check_rank_compatible(wrong_d_in, _reference())
    nan = dict(small, bias=np.array([np.nan, 0, 0], np.float32))
    assert "'bias' contains NaN" in check_rank_compatible(nan, _reference())


def test_rank_compatible_rejects_mixed_ranks():
    reference = {**_reference(), A2: np.zeros((2, 4), np.float32), B2: np.zeros((3, 2), np.float32)}
    mixed = {
        **reference,
        A: np.zeros((1, 4), np.float32),
        B: np.zeros((3, 1), np.float32),
    }
    reason = check_rank_compatible(mixed, reference)
    assert reason is not None and "LoRA ranks differ" in reason
