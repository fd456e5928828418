"""Property-based fuzzing of client replies for every registered strategy (issue 14, section 1).

Hypothesis draws a broken reply (bad metric values of every type, missing required metrics,
garbage or truncated array bytes, NaN/Inf at any position, wrong shapes, dtypes or stype, and
the hand-written catalogue of ``tests.server.hostile``) for one node's train reply and,
optionally, its evaluate reply. Through the real round loop, the run must finish every round
and end on exactly the adapter it reaches when that node crashes instead: the aggregate of the
valid replies alone. Derandomized and bounded, so it is fast and repeatable.
"""

from __future__ import annotations

import math
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from colora import contract as names
from colora.wire import to_numpy
from strategies.registry import STRATEGIES
from tests.server import hostile
from tests.server.federation_fakes import (
    NODES,
    AnsweringGrid,
    assert_same_arrays,
    crashed,
    federate,
    honest_arrays,
)
from tests.server.test_hostile_replies import assert_survived

ROUNDS = 2
REQUIRED = (names.CLIENT_ID, names.NUM_EXAMPLES)
CHECKED = (*REQUIRED, names.TRAIN_LOSS, names.TRAIN_LOSS_TASK + "generation")
# Values no metric of the contract accepts: non-finite, negative, non-numbers, bools.
BAD_VALUES = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, True, False]),
    st.floats(max_value=-1e-6, allow_nan=False, allow_infinity=False),
    st.lists(st.floats(allow_nan=True), max_size=3),
    st.text(max_size=5),
)
BAD_DTYPES = st.sampled_from(["float64", "float16", "int32", "int64", ">f4", "complex64"])


@st.composite
def bad_metrics(draw):
    key = draw(st.sampled_from(CHECKED))
    drop = key in REQUIRED and draw(st.booleans())
    value = None if drop else draw(BAD_VALUES)
    return lambda m: hostile.reply_with(m, metrics={key: value})


def _mangled(draw, spoil):
    """A reply whose first array is ``spoil(draw, good_value) -> Array``."""
    seed = draw(st.integers(0, 2**32 - 1))

    def reply(message: Message) -> Message:
        key = hostile.first_key(message)
        good = honest_arrays(message).get(key, np.zeros(3, np.float32))
        return hostile.with_array(message, spoil(np.random.default_rng(seed), good))

    return reply


@st.composite
def bad_arrays(draw):
    kind = draw(st.sampled_from(["garbage", "truncate", "non-finite", "shape", "dtype", "stype"]))
    if kind == "garbage":
        data = draw(st.binary(max_size=96))
        return lambda m: hostile.with_array(m, hostile.npy_array(data))
    if kind == "stype":
        stype = draw(st.text(max_size=12).filter(lambda s: s != names.NPY_STYPE))
        return lambda m: hostile.with_array(m, hostile.npy_array(b"\x00" * 4, stype=stype))
    if kind == "dtype":
        dtype = draw(BAD_DTYPES)
        return _mangled(draw, lambda rng, v: Array(np.ascontiguousarray(v.astype(dtype))))
    if kind == "shape":
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        return _mangled(
            draw, lambda rng, v: Array(rng.normal(size=shape if shape != v.shape else (9,)))
        )
    if kind == "truncate":
        keep = draw(st.floats(0, 0.99))

        def truncated(rng, v):
            data = hostile.npy_bytes(v)
            return hostile.npy_array(data[: int(keep * len(data))], shape=v.shape)

        return _mangled(draw, truncated)
    bad = draw(st.sampled_from([np.nan, np.inf, -np.inf]))

    def non_finite(rng, v):
        out = v.copy()
        out.flat[rng.integers(out.size)] = bad
        return Array(out)

    return _mangled(draw, non_finite)


TRAIN_REPLIES = st.one_of(
    bad_metrics(), bad_arrays(), st.sampled_from(list(hostile.TRAIN.values()))
)
EVAL_REPLIES = st.one_of(st.none(), st.sampled_from(list(hostile.EVAL.values())))


@cache
def valid_only(strategy: str, node: int) -> dict[str, np.ndarray]:
    """The final adapter when ``node`` crashes every round: the valid replies alone."""
    grid = AnsweringGrid(train={node: crashed}, evaluate={node: crashed})
    with tempfile.TemporaryDirectory() as tmp:
        result = federate(
            Path(tmp), grid, **{"strategy.name": strategy, "num-server-rounds": ROUNDS}
        )
    return to_numpy(result.arrays)


@pytest.mark.usefixtures("server_task_identity")
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@settings(
    max_examples=12,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(node=st.sampled_from(NODES), train=TRAIN_REPLIES, evaluate=EVAL_REPLIES)
def test_the_loop_survives_and_aggregates_only_the_valid_replies(strategy, node, train, evaluate):
    grid = AnsweringGrid(train={node: train}, evaluate={node: evaluate or crashed})
    with tempfile.TemporaryDirectory() as tmp:
        result = federate(
            Path(tmp), grid, **{"strategy.name": strategy, "num-server-rounds": ROUNDS}
        )
        # centralized trains one pooled node (the lowest id); when it is the broken one, every
        # round fails (recorded, adapter kept), exactly as when it crashes.
        sole = strategy == "centralized"
        sent_to_node = not sole or node == min(NODES)
        rejected = node if sent_to_node else None
        assert_survived(result, ROUNDS, rejected_node=rejected, failed=sole and sent_to_node)
        got = to_numpy(result.arrays)
    assert_same_arrays(got, valid_only(strategy, node), strategy)
