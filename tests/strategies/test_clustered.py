"""Clustered: planted tasks are recovered without labels, after the warm-up, and stick."""

import json

import numpy as np
import pytest
from flwr.app import ConfigRecord

from colora.wire import to_numpy
from runconfig.fields import ConfigError
from strategies.maths.averaging import flatten_state, weighted_average
from tests.strategies.fakes import FakeGrid, lora_state, sent_state, strategy, train_round
from tests.strategies.planted import PlantedClients, task_of


@pytest.mark.parametrize("method", ["spectral", "linkage"])
def test_same_task_clients_share_a_cluster_and_get_its_adapter(method):
    x0 = lora_state(np.random.default_rng(0))
    clients, grid = PlantedClients(x0), FakeGrid(range(1, 7))
    clustered = strategy("clustered", **{"cluster-method": method, "warmup-rounds": 1})
    _, replies, global_1 = train_round(clustered, 1, x0, grid, clients.update)
    assignment = clustered.assignment
    assert len(set(assignment.values())) == 3
    for a in range(6):
        for b in range(6):
            assert (assignment[a] == assignment[b]) == (task_of(a) == task_of(b))

    thetas = {r.metadata.src_node_id - 1: to_numpy(r.content["arrays"]) for r in replies}
    second = list(clustered.configure_train(2, global_1, ConfigRecord(), grid))
    for message in second:
        client = message.metadata.dst_node_id - 1
        members = [c for c in range(6) if assignment[c] == assignment[client]]
        expected = weighted_average([thetas[c] for c in members], [1] * len(members))
        for key, value in sent_state(message).items():
            np.testing.assert_allclose(value, expected[key], atol=1e-6)
    logged = json.loads(json.dumps(clustered.round_log(1)))
    assert logged["clusters"] == {str(c): k for c, k in assignment.items()}


def test_warmup_then_sticky_membership_and_newcomers_join_the_nearest_cluster():
    x0 = lora_state(np.random.default_rng(0))
    clients = PlantedClients(x0)
    clustered = strategy("clustered", **{"warmup-rounds": 2})
    arrays = x0
    _, _, arrays = train_round(clustered, 1, arrays, FakeGrid(range(1, 7)), clients.update)
    assert clustered.assignment == {}  # still warming up: everyone is sent the global mean
    _, _, arrays = train_round(clustered, 2, arrays, FakeGrid(range(1, 7)), clients.update)
    split = dict(clustered.assignment)
    assert len(set(split.values())) == 3

    def swapped(sent):  # client 0 now updates like task 1; newcomer 6 has task 0 (6 mod 3)
        return clients.update(sent, behaves_like={0: 1})

    _, _, arrays = train_round(clustered, 3, arrays, FakeGrid(range(1, 8)), swapped)
    assert clustered.assignment[0] == split[0]  # sticky
    assert clustered.assignment[6] == split[3]  # the newcomer joins task 0's cluster

    restarted = strategy("clustered")
    restarted.load_state(clustered.state_arrays())
    assert restarted.assignment == clustered.assignment
    assert set(restarted.adapters) == set(clustered.adapters)


def test_bad_method_is_named():
    with pytest.raises(ConfigError, match=r"strategy\.cluster-method"):
        strategy("clustered", **{"cluster-method": "kmeans"})


def test_a_checkpoint_with_whole_mean_updates_still_places_newcomers():
    """Checkpoints from before the sketch hold D-long cluster directions; a newcomer is then
    compared in sketch space after sketching them (sketch width 48 < D = 66 here). Those
    checkpoints measured updates on the factors, so the run resumes with that measure."""
    x0 = lora_state(np.random.default_rng(0))
    clients = PlantedClients(x0)
    old = strategy("clustered", **{"similarity-measure": "factors"})
    old.sender.sketch_width = 48
    flat = flatten_state(x0)
    old.load_state(
        {
            # clients 0, 1, 2 in clusters 5, 6, 7; their whole mean updates, as stored before
            "cluster-assignment": np.array([[0, 5], [1, 6], [2, 7]], np.int64),
            **{f"cluster-adapter/{5 + t}": flat for t in range(3)},
            **{f"cluster-direction/{5 + t}": clients.directions[t] for t in range(3)},
        }
    )
    train_round(old, 2, x0, FakeGrid(range(1, 8)), clients.update)
    assert old.directions[5].shape == (48,)  # refreshed in sketch space
    for client in (3, 4, 5, 6):  # newcomers join the cluster of their task (client mod 3)
        assert old.assignment[client] == 5 + client % 3
