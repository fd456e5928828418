"""FedAvg (FedIT) on hand-built Flower messages: weighted mean, HetLoRA zero-padding, config."""

import numpy as np
import pytest

from colora.keys import truncate_rank, zero_pad_rank
from colora.wire import to_numpy
from runconfig.fields import ConfigError
from strategies.maths.averaging import weighted_average
from tests.strategies.fakes import RANK, FakeGrid, lora_state, metrics, strategy, train_round


def test_fedavg_is_the_example_weighted_mean_of_the_replies():
    rng = np.random.default_rng(0)
    updates = {101: lora_state(rng), 102: lora_state(rng), 103: lora_state(rng)}
    counts = {101: 1, 102: 2, 103: 5}
    fedavg = strategy("fedavg")

    def update(sent):
        node = sent.metadata.dst_node_id
        return updates[node], metrics(node - 101, counts[node])

    sent, _, new = train_round(fedavg, 1, lora_state(rng), FakeGrid(updates), update)
    assert len(sent) == 3 and fedavg.state_arrays() == {} and fedavg.round_log(1) == {}
    expected = weighted_average(list(updates.values()), list(counts.values()))
    for key, value in to_numpy(new).items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-6)


def test_heterogeneous_ranks_are_announced_and_zero_padded():
    rng = np.random.default_rng(1)
    ranks = {101: 3, 102: 1}
    updates = {n: truncate_rank(lora_state(rng), r) for n, r in ranks.items()}
    fedavg = strategy("fedavg", **{"client-ranks": "3,1"})

    def update(sent):
        assert sent.content["config"]["client-ranks"] == "3,1"
        node = sent.metadata.dst_node_id
        return updates[node], metrics(node - 101)

    _, _, new = train_round(fedavg, 1, lora_state(rng), FakeGrid(ranks), update)
    padded = [zero_pad_rank(s, RANK) for s in updates.values()]
    expected = weighted_average(padded, [1, 1])
    for key, value in to_numpy(new).items():
        assert value.shape == expected[key].shape
        np.testing.assert_allclose(value, expected[key], rtol=1e-6)


@pytest.mark.parametrize("ranks", ["8,x", "0", "4,-1"])
def test_bad_client_ranks_name_the_key(ranks):
    with pytest.raises(ConfigError, match=r"strategy\.client-ranks"):
        strategy("fedavg", **{"client-ranks": ranks})
