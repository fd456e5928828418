"""Centralized: one pooled-data trainer takes the whole federation's step budget each round."""

import numpy as np
from flwr.app import ConfigRecord

from colora.wire import to_numpy, to_record
from tests.strategies.fakes import FakeGrid, lora_state, metrics, strategy, train_round


def test_one_trainer_with_pooled_data_and_k_times_the_steps():
    rng = np.random.default_rng(0)
    x0, trained = lora_state(rng), lora_state(rng)
    central = strategy("centralized")
    grid = FakeGrid([30, 10, 20])

    def update(sent):
        config = sent.content["config"]
        assert config["pooled-data"] is True and config["steps-scale"] == 3
        return trained, metrics(0)

    sent, _, new = train_round(central, 1, x0, grid, update)
    assert [m.metadata.dst_node_id for m in sent] == [10]
    for key, value in to_numpy(new).items():
        np.testing.assert_array_equal(value, trained[key])
    evaluate = list(central.configure_evaluate(1, to_record(trained), ConfigRecord(), grid))
    assert [m.metadata.dst_node_id for m in evaluate] == [10]  # the same trainer evaluates
    assert evaluate[0].content["config"]["pooled-data"] is True
