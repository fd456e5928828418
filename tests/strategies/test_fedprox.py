"""FedProx: the server sends proximal-mu to the clients and averages as FedAvg does."""

import numpy as np
import pytest

from colora.wire import to_numpy
from runconfig.fields import ConfigError
from strategies.maths.averaging import weighted_average
from tests.strategies.fakes import FakeGrid, lora_state, metrics, strategy, train_round


def test_fedprox_sends_mu_and_averages_like_fedavg():
    rng = np.random.default_rng(0)
    updates = {7: lora_state(rng), 9: lora_state(rng)}
    fedprox = strategy("fedprox", **{"proximal-mu": 0.5})

    def update(sent):
        assert sent.content["config"]["proximal-mu"] == 0.5
        node = sent.metadata.dst_node_id
        return updates[node], metrics(node, n=node)

    _, _, new = train_round(fedprox, 1, lora_state(rng), FakeGrid(updates), update)
    expected = weighted_average([updates[7], updates[9]], [7, 9])
    for key, value in to_numpy(new).items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-6)


def test_negative_mu_is_rejected():
    with pytest.raises(ConfigError, match=r"strategy\.proximal-mu"):
        strategy("fedprox", **{"proximal-mu": -1.0})
