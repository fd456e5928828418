"""A bad reply (missing key, wrong shape or dtype, NaN or Inf, an oversized payload, a crashed
client) is dropped by screening with a reason, and the strategy's aggregate equals the
aggregate of the good replies alone."""

import numpy as np
import pytest
from flwr.app import ConfigRecord, Error, Message

from colora.wire import to_numpy, to_record
from server.screening import screen_replies
from strategies.maths.averaging import weighted_average
from tests.strategies.fakes import FakeGrid, lora_state, metrics, reply, strategy

KEY = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"


def _missing(state):
    return {k: v for k, v in state.items() if k != KEY}


def _wrong_shape(state):
    return {**state, KEY: np.zeros((2, 2), np.float32)}


def _nan(state):
    bad = state[KEY].copy()
    bad[0, 0] = np.nan
    return {**state, KEY: bad}


def _inf(state):
    bad = state[KEY].copy()
    bad[-1, -1] = -np.inf
    return {**state, KEY: bad}


def _wrong_dtype(state):
    return {**state, KEY: state[KEY].astype(np.float64)}


def _oversized(state):  # 8 MB smuggled beside the adapter
    return {**state, "extra.weight": np.zeros((1024, 2048), np.float32)}


@pytest.mark.parametrize(
    "strategy_name", ["fedavg", "fedadam", "similarity-weighted", "clustered", "coba"]
)
@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (_missing, "missing key"),
        (_wrong_shape, "expected shape"),
        (_nan, "NaN"),
        (_inf, "NaN or Inf"),
        (_wrong_dtype, "expected dtype float32, got float64"),
        (_oversized, "unexpected key 'extra.weight'"),
    ],
)
def test_bad_reply_is_dropped_and_the_rest_aggregates(strategy_name, spoil, reason, caplog):
    rng = np.random.default_rng(0)
    x0 = lora_state(rng)
    updates = {n: lora_state(rng) for n in (1, 2, 3)}

    def replies_for(strat, bad_node):
        sent = list(strat.configure_train(1, to_record(x0), ConfigRecord(), FakeGrid(updates)))
        out = []
        for message in sent:
            node = message.metadata.dst_node_id
            state = spoil(updates[node]) if node == bad_node else updates[node]
            out.append(
                reply(message, state, metrics(node, n=node, **{"num-examples.generation": node}))
            )
        return sent, out

    with_bad = strategy(strategy_name)
    sent, replies = replies_for(with_bad, bad_node=2)
    accepted, rejected = screen_replies(sent, replies)
    assert [r.node_id for r in rejected] == [2] and reason in rejected[0].reason
    assert any("Rejected the reply of node 2" in r.getMessage() for r in caplog.records)
    result, _ = with_bad.aggregate_train(1, accepted)

    good_only = strategy(strategy_name)
    sent, replies = replies_for(good_only, bad_node=None)
    expected, _ = good_only.aggregate_train(1, [r for r in replies if r.metadata.src_node_id != 2])
    for key, value in to_numpy(expected).items():
        np.testing.assert_array_equal(to_numpy(result)[key], value)
    if strategy_name == "fedavg":
        mean = weighted_average([updates[1], updates[3]], [1, 3])
        for key, value in to_numpy(result).items():
            np.testing.assert_allclose(value, mean[key], rtol=1e-6)


def test_a_crashed_client_is_rejected_with_its_error_and_the_round_aggregates(caplog):
    rng = np.random.default_rng(1)
    x0, updates = lora_state(rng), {n: lora_state(rng) for n in (1, 2, 3)}
    fedavg = strategy("fedavg")
    sent = list(fedavg.configure_train(1, to_record(x0), ConfigRecord(), FakeGrid(updates)))
    replies = [
        Message(Error(code=0, reason="RuntimeError: CUDA out of memory"), reply_to=m)
        if m.metadata.dst_node_id == 3
        else reply(m, updates[m.metadata.dst_node_id], metrics(m.metadata.dst_node_id))
        for m in sent
    ]
    accepted, rejected = screen_replies(sent, replies)
    assert [r.node_id for r in rejected] == [3]
    assert "client error: RuntimeError: CUDA out of memory" in rejected[0].reason
    result, _ = fedavg.aggregate_train(1, accepted)
    mean = weighted_average([updates[1], updates[2]], [10, 10])
    for key, value in to_numpy(result).items():
        np.testing.assert_allclose(value, mean[key], rtol=1e-6)
