"""The reply contract (``colora.contract``): what parses, and that nothing else raises
anything but ``ReplyError``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, RecordDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from colora import contract as names
from colora.contract import ReplyError, decode_array, parse_evaluate, parse_train
from tests.server.hostile import forced_metrics, npy_array, npy_bytes

pytestmark = pytest.mark.usefixtures("server_task_identity")
FUZZ = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _message(metrics, arrays=None) -> Message:
    content = {"metrics": forced_metrics(metrics)}
    if arrays is not None:
        content["arrays"] = ArrayRecord(arrays)
    return Message(RecordDict(content), dst_node_id=7, message_type="train")


def test_an_honest_train_reply_parses_into_typed_fields():
    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    metrics = {
        names.CLIENT_ID: 3,
        names.NUM_EXAMPLES: 12,
        names.TASK_EXAMPLES + "generation": 5,
        names.TASK_EXAMPLES + "translation": 7,
        names.TRAIN_LOSS_TASK + "generation": 1.25,
        names.EVAL_METRIC + "generation.pass@1": 50.0,
        "some-future-metric": 1.0,  # unknown names are left out, not trusted
    }
    reply = parse_train(_message(metrics, {"w": Array(value)}))
    assert reply.client_id == 3 and reply.num_examples == 12.0
    assert reply.task_examples == {"generation": 5.0, "translation": 7.0}
    assert "some-future-metric" not in reply.metrics
    assert reply.metrics[names.EVAL_METRIC + "generation.pass@1"] == 50.0
    np.testing.assert_array_equal(reply.arrays["w"], value)
    assert not reply.arrays["w"].flags.writeable  # a view of the payload, never a copy


def test_an_evaluate_reply_parses_its_losses_per_task():
    metrics = {names.CLIENT_ID: 0, names.NUM_EXAMPLES: 4, names.EVAL_LOSS_TASK + "translation": 2.5}
    reply = parse_evaluate(_message(metrics))
    assert reply.eval_losses == {"translation": 2.5} and reply.num_examples == 4.0


@pytest.mark.parametrize(
    "value",
    [
        np.ones((), np.float64),
        np.zeros((0, 4), np.float32),
        np.arange(5, dtype=np.int64),
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    ],
    ids=str,
)
def test_decode_array_equals_numpy_for_every_plain_layout(value):
    np.testing.assert_array_equal(decode_array(Array(value)), Array(value).numpy())


def test_an_object_npy_is_refused_without_unpickling():
    data = npy_bytes(np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(ReplyError, match=r"unsupported \.npy header"):
        decode_array(npy_array(data, dtype="object", shape=(1,)))


# Metric values of any type a client could put on the wire.
ANY_VALUE = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=4),
    st.lists(st.floats(), max_size=3),
    st.none(),
    st.binary(max_size=4),
)
ANY_NAME = st.one_of(
    st.sampled_from(
        [
            names.CLIENT_ID,
            names.NUM_EXAMPLES,
            names.TASK_EXAMPLES + "generation",
            names.TRAIN_LOSS,
            names.EVAL_LOSS_TASK + "translation",
            names.EVAL_METRIC + "generation.pass@1",
        ]
    ),
    st.text(max_size=20),
)
ANY_ARRAY = st.builds(
    lambda dtype, shape, stype, data: npy_array(data, dtype=dtype, shape=shape, stype=stype),
    st.sampled_from(["float32", "float64", "object", "int8", "", "<f4"]),
    st.lists(st.integers(-2, 2**40), max_size=4),
    st.sampled_from([names.NPY_STYPE, "torch", ""]),
    st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda v, cut: npy_bytes(v)[:cut],
            st.sampled_from([np.zeros((2, 3), np.float32), np.ones(4, np.float64)]),
            st.integers(0, 300),
        ),
    ),
)


@FUZZ
@given(
    metrics=st.dictionaries(ANY_NAME, ANY_VALUE, max_size=6), arrays=st.lists(ANY_ARRAY, max_size=3)
)
def test_parsing_anything_returns_a_valid_reply_or_raises_reply_error(metrics, arrays):
    message = _message({}, {f"k{i}": a for i, a in enumerate(arrays)})
    message.content["metrics"].__dict__["_data"].update(metrics)
    for parse in (parse_train, parse_evaluate):
        try:
            reply = parse(message)
        except ReplyError as error:
            assert str(error)
            continue
        assert isinstance(reply.client_id, int) and not isinstance(reply.client_id, bool)
        assert 0 <= reply.client_id <= names.MAX_CLIENT_ID
        assert math.isfinite(reply.num_examples) and reply.num_examples >= 0
        assert all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in reply.metrics.values()
        )
        for value in getattr(reply, "arrays", {}).values():
            assert value.dtype.kind in "fiucb"


@pytest.mark.parametrize(
    ("name", "task"),
    [
        (names.TASK_EXAMPLES + "generation", "generation"),
        (names.TRAIN_LOSS_TASK + "translation", "translation"),
        (names.EVAL_LOSS_TASK + "summarization", "summarization"),
        (names.EVAL_METRIC + "generation.pass@1", "generation"),
        (names.EVAL_SECONDS + "translation", "translation"),
        (names.EVAL_LOSS_TASK + "invented", "invented"),
        (names.NUM_EXAMPLES, None),
        (names.EVAL_LOSS, None),
        (names.EVAL_METRIC + "generation", None),  # no metric after the task
        ("unknown", None),
    ],
)
def test_metric_task_names_the_task_of_a_per_task_metric(name, task):
    assert names.metric_task(name) == task


def test_a_reply_with_more_metrics_than_the_cap_is_refused():
    honest = {names.CLIENT_ID: 0, names.NUM_EXAMPLES: 4}
    extra = {f"unknown-{i}": 0.0 for i in range(names.MAX_METRICS - len(honest))}
    assert parse_evaluate(_message({**honest, **extra})).num_examples == 4
    with pytest.raises(ReplyError, match=f"carries {names.MAX_METRICS + 1} metrics; at most"):
        parse_evaluate(_message({**honest, **extra, "one-more": 0.0}))
