"""Local-only: no tensors travel either way and the global arrays never change."""

import numpy as np
from flwr.app import ConfigRecord

from colora.wire import payload_bytes, to_numpy, to_record
from tests.strategies.fakes import FakeGrid, lora_state, metrics, strategy, train_round


def test_nothing_travels_and_nothing_is_aggregated():
    x0 = lora_state(np.random.default_rng(0))
    local = strategy("local-only")

    def update(sent):
        assert payload_bytes(sent.content["arrays"]) == 0
        assert sent.content["config"]["private-factors"] == "A,B"
        return {}, metrics(sent.metadata.dst_node_id)

    _, replies, new = train_round(local, 1, x0, FakeGrid([1, 2, 3]), update)
    assert all(payload_bytes(r.content["arrays"]) == 0 for r in replies)
    for key, value in to_numpy(new).items():
        np.testing.assert_array_equal(value, x0[key])
    evaluate = list(local.configure_evaluate(1, to_record(x0), ConfigRecord(), FakeGrid([1, 2])))
    assert all(payload_bytes(m.content["arrays"]) == 0 for m in evaluate)
