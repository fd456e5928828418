"""Similarity-weighted: planted tasks get >3x peer weight, and each node gets its own mixture."""

import json

import numpy as np
import pytest
from flwr.app import ConfigRecord

from colora.wire import to_numpy
from runconfig.fields import ConfigError
from strategies import messages
from strategies.maths.averaging import flatten_state, normalized_weights, weighted_average
from strategies.maths.reproducible import weighted_row_sum
from strategies.ordering import by_client
from tests.strategies.fakes import FakeGrid, lora_state, sent_state, strategy, train_round
from tests.strategies.planted import PlantedClients, task_of

NODES = range(1, 7)


def _two_rounds(mixing: float, **params):
    x0 = lora_state(np.random.default_rng(0))
    clients, grid = PlantedClients(x0), FakeGrid(NODES)
    sim = strategy("similarity-weighted", tau=0.5, mixing=mixing, **params)
    _, replies, global_1 = train_round(sim, 1, x0, grid, clients.update)
    second = list(sim.configure_train(2, global_1, ConfigRecord(), grid))
    return sim, replies, global_1, {m.metadata.dst_node_id: sent_state(m) for m in second}


def test_same_task_peers_get_three_times_the_weight_of_others_and_self_gets_beta():
    sim, _, _, _ = _two_rounds(mixing=1.0)
    entry = sim.history[-1]
    for i, ci in enumerate(entry.clients):
        for j, cj in enumerate(entry.clients):
            if i == j or task_of(ci) != task_of(cj):
                continue
            others = [
                entry.weights[i, k]
                for k, ck in enumerate(entry.clients)
                if task_of(ck) != task_of(ci)
            ]
            assert entry.weights[i, j] > 3 * max(others), (ci, cj)
    np.testing.assert_array_equal(np.diag(entry.weights), [0.5] * 6)


def test_each_node_gets_its_own_mixture_and_mixing_zero_is_fedavg():
    sim, replies, _, second = _two_rounds(mixing=1.0)
    thetas = {r.metadata.src_node_id: to_numpy(r.content["arrays"]) for r in replies}
    entry = sim.history[-1]
    for row, client in enumerate(entry.clients):
        peers = [thetas[c + 1] for c in entry.clients]
        expected = weighted_average(peers, entry.weights[row])
        for key, value in second[client + 1].items():
            np.testing.assert_allclose(value, expected[key], atol=1e-5)
    assert len({flatten_state(s).tobytes() for s in second.values()}) == 6

    _, replies, _, second = _two_rounds(mixing=0.0)
    mean = weighted_average([to_numpy(r.content["arrays"]) for r in replies], [1] * 6)
    for state in second.values():
        for key, value in state.items():
            np.testing.assert_allclose(value, mean[key], atol=1e-6)


def test_log_is_json_and_state_survives_a_restart():
    sim, *_ = _two_rounds(mixing=1.0)
    logged = json.loads(json.dumps(sim.round_log(1)))
    assert sorted(logged["similarity"]["clients"]) == [str(c) for c in range(6)]
    assert np.shape(logged["similarity"]["matrix"]) == (6, 6)
    restarted = strategy("similarity-weighted")
    restarted.load_state(sim.state_arrays())
    assert [h.clients for h in restarted.history] == [h.clients for h in sim.history]
    assert set(restarted.mixtures) == set(range(6))
    np.testing.assert_array_equal(restarted.mixtures[3], sim.mixtures[3])


def test_bad_keys_are_named():
    with pytest.raises(ConfigError, match=r"strategy\.tau"):
        strategy("similarity-weighted", tau=0.0)
    with pytest.raises(ConfigError, match=r"strategy\.mixing"):
        strategy("similarity-weighted", mixing=1.5)
    with pytest.raises(ConfigError, match=r"strategy\.self-weight = -0\.1"):
        strategy("similarity-weighted", **{"self-weight": -0.1})
    with pytest.raises(ConfigError, match=r"strategy\.similarity-measure = 'cos'.*product"):
        strategy("similarity-weighted", **{"similarity-measure": "cos"})
    with pytest.raises(ConfigError, match=r"strategy\.tau"):
        strategy("clustered", tau=-1.0)
    with pytest.raises(ConfigError, match=r"strategy\.top-peers"):
        strategy("similarity-weighted", **{"top-peers": -1})


def test_top_one_peer_mixes_a_client_with_its_same_task_peer_only():
    """Issue 13: each row keeps the client and its m largest peer weights, renormalised."""
    sim, replies, _, second = _two_rounds(mixing=1.0, **{"top-peers": 1})
    thetas = {r.metadata.src_node_id - 1: to_numpy(r.content["arrays"]) for r in replies}
    entry = sim.history[-1]
    for row, client in enumerate(entry.clients):
        peer = next(c for c in entry.clients if c != client and task_of(c) == task_of(client))
        col = entry.clients.index(peer)
        w_self, w_peer = entry.weights[row, row], entry.weights[row, col]
        expected = weighted_average([thetas[client], thetas[peer]], [w_self, w_peer])
        for key, value in second[client + 1].items():
            np.testing.assert_allclose(value, expected[key], atol=1e-6)


def test_unknown_nodes_get_the_global_mean():
    sim, _, global_1, _ = _two_rounds(mixing=1.0)
    messages = list(sim.configure_evaluate(1, global_1, ConfigRecord(), FakeGrid([1, 99])))
    by_node = {m.metadata.dst_node_id: sent_state(m) for m in messages}
    for key, value in to_numpy(global_1).items():
        np.testing.assert_array_equal(by_node[99][key], value)
    assert not all(np.array_equal(by_node[1][k], v) for k, v in to_numpy(global_1).items())


def test_an_absent_clients_mixture_survives_the_next_round():
    """Round 2 writes its mixtures into round 1's K x D block; a client absent from round 2
    keeps exactly the mixture it had."""
    x0 = lora_state(np.random.default_rng(0))
    clients = PlantedClients(x0)
    sim = strategy("similarity-weighted", tau=0.5, mixing=1.0)
    _, _, global_1 = train_round(sim, 1, x0, FakeGrid([1, 2, 3]), clients.update)
    kept = {c: v.copy() for c, v in sim.mixtures.items()}
    train_round(sim, 2, global_1, FakeGrid([2, 3, 4]), clients.update)  # client 0 is absent
    assert set(sim.mixtures) == {0, 1, 2, 3}
    np.testing.assert_array_equal(sim.mixtures[0], kept[0])
    assert not np.array_equal(sim.mixtures[1], kept[1])


@pytest.mark.parametrize("name", ["similarity-weighted", "clustered"])
def test_the_global_adapter_is_the_fedavg_mean_bit_for_bit(name):
    """The mean is accumulated from the scratch rows the sketches are made from (the replies
    are never copied into a K×D matrix): the bits of ``weighted_row_sum`` over that matrix."""
    x0 = lora_state(np.random.default_rng(0))
    clients, grid = PlantedClients(x0), FakeGrid(NODES)
    _, replies, global_1 = train_round(strategy(name, tau=0.5), 1, x0, grid, clients.update)
    replies = by_client(replies)
    matrix = np.stack([flatten_state(to_numpy(r.content["arrays"])) for r in replies])
    p = normalized_weights(messages.example_counts(replies))
    expected = weighted_row_sum(matrix.astype(np.float32), p)
    np.testing.assert_array_equal(flatten_state(to_numpy(global_1)), expected)
