"""Issue 11, "Bad input": the similarity-aware strategies survive a zero update, a round with a
single client, a client rejected by screening and a cluster that empties, for every measure."""

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord

from colora.wire import to_numpy, to_record
from server.screening import screen_replies
from strategies.maths.averaging import flatten_state
from strategies.maths.update_measures import MEASURES
from tests.strategies.fakes import FakeGrid, lora_state, metrics, reply, strategy, train_round
from tests.strategies.planted import PlantedClients, task_of

SIMILARITY_STRATEGIES = ("similarity-weighted", "clustered")
NODES = range(1, 7)


def _build(name: str, measure: str, **params):
    return strategy(name, **{"similarity-measure": measure, **params})


def _finite(record) -> bool:
    return all(np.all(np.isfinite(v)) for v in to_numpy(record).values())


def _zero_for(clients: PlantedClients, zero: set[int]):
    """Clients in ``zero`` send back exactly what they were sent: a zero update."""

    def update(sent):
        client = sent.metadata.dst_node_id - 1
        if client in zero:
            return to_numpy(sent.content["arrays"]), metrics(client)
        return clients.update(sent)

    return update


@pytest.mark.parametrize("measure", MEASURES)
def test_a_zero_update_gets_even_peer_weights_and_the_others_still_pair(measure):
    x0 = lora_state(np.random.default_rng(0))
    clients, grid = PlantedClients(x0), FakeGrid(NODES)
    sim = _build("similarity-weighted", measure)
    for server_round in (1, 2):
        _, _, arrays = train_round(sim, server_round, x0, grid, _zero_for(clients, {0}))
        assert _finite(arrays)
    entry = sim.history[-1]
    # Client 0's cosines are all 0, so its row's spread is 0: β = 0.5 on itself, 0.1 each peer.
    np.testing.assert_allclose(entry.weights[0], [0.5, 0.1, 0.1, 0.1, 0.1, 0.1])
    for i in (1, 2, 4, 5):
        peer = (i + 3) % 6
        others = [j for j in range(6) if j not in (i, peer)]
        assert entry.weights[i, peer] > 3 * entry.weights[i, others].max()
    assert all(np.all(np.isfinite(m)) for m in sim.mixtures.values())

    clustered = _build("clustered", measure)
    train_round(clustered, 1, x0, grid, _zero_for(clients, {0}))
    a = clustered.assignment
    assert a[1] == a[4] and a[2] == a[5] and a[1] != a[2]


@pytest.mark.parametrize("name", SIMILARITY_STRATEGIES)
@pytest.mark.parametrize("measure", MEASURES)
def test_a_round_of_zero_updates_only(name, measure):
    x0 = lora_state(np.random.default_rng(0))
    strat = _build(name, measure)
    grid = FakeGrid(NODES)
    _, _, arrays = train_round(strat, 1, x0, grid, _zero_for(PlantedClients(x0), set(range(6))))
    np.testing.assert_allclose(flatten_state(to_numpy(arrays)), flatten_state(x0), rtol=1e-6)
    if name == "clustered":
        assert set(strat.assignment.values()) == {0}  # nothing to tell apart: one cluster
    else:  # S = I: every client keeps β and spreads 1 − β evenly
        W = strat.history[-1].weights
        np.testing.assert_allclose(W, 0.4 * np.eye(6) + 0.1)


@pytest.mark.parametrize("measure", MEASURES)
def test_a_round_with_a_single_client(measure):
    x0 = lora_state(np.random.default_rng(0))
    clients = PlantedClients(x0)
    sim = _build("similarity-weighted", measure, **{"min-train-nodes": 1, "min-available-nodes": 1})
    _, replies, arrays = train_round(sim, 1, x0, FakeGrid([4]), clients.update)
    np.testing.assert_array_equal(sim.history[-1].weights, [[1.0]])
    theta = flatten_state(to_numpy(replies[0].content["arrays"]))
    np.testing.assert_array_equal(sim.mixtures[3], theta)
    np.testing.assert_array_equal(flatten_state(to_numpy(arrays)), theta)

    clustered = _build("clustered", measure, **{"min-train-nodes": 1, "min-available-nodes": 1})
    train_round(clustered, 1, x0, FakeGrid([4]), clients.update)
    assert clustered.assignment == {3: 0}
    # Later clients join the only cluster there is.
    train_round(clustered, 2, x0, FakeGrid(NODES), clients.update)
    assert set(clustered.assignment.values()) == {0}


def _screened_round(strat, server_round, arrays, clients, bad_node):
    """A round whose reply from ``bad_node`` carries NaN: screening rejects it."""
    record = arrays if isinstance(arrays, ArrayRecord) else to_record(arrays)
    sent = list(strat.configure_train(server_round, record, ConfigRecord(), FakeGrid(NODES)))
    replies = []
    for message in sent:
        state, values = clients.update(message)
        if message.metadata.dst_node_id == bad_node:
            key = sorted(state)[0]
            state = {**state, key: np.full_like(state[key], np.nan)}
        replies.append(reply(message, state, values))
    accepted, rejected = screen_replies(sent, replies)
    assert [r.node_id for r in rejected] == [bad_node]
    return strat.aggregate_train(server_round, accepted)[0]


@pytest.mark.parametrize("measure", MEASURES)
def test_a_client_rejected_by_screening_is_left_out_and_rejoins(measure):
    x0 = lora_state(np.random.default_rng(0))
    clients = PlantedClients(x0)
    clustered = _build("clustered", measure)
    arrays = _screened_round(clustered, 1, x0, clients, bad_node=2)  # client 1 rejected
    assert 1 not in clustered.assignment and clustered.assignment[2] == clustered.assignment[5]
    clusters = set(clustered.assignment.values())
    train_round(clustered, 2, arrays, FakeGrid(NODES), clients.update)
    assert clustered.assignment[1] in clusters  # joins the nearest of the split's clusters

    sim = _build("similarity-weighted", measure)
    arrays = _screened_round(sim, 1, x0, clients, bad_node=2)
    assert sim.history[-1].clients == (0, 2, 3, 4, 5) and 1 not in sim.mixtures
    sent = list(sim.configure_train(2, arrays, ConfigRecord(), FakeGrid(NODES)))
    by_node = {m.metadata.dst_node_id: flatten_state(to_numpy(m.content["arrays"])) for m in sent}
    np.testing.assert_array_equal(by_node[2], flatten_state(to_numpy(arrays)))  # global mean


@pytest.mark.parametrize("measure", MEASURES)
def test_a_cluster_that_empties_keeps_its_adapter_for_its_members(measure):
    x0 = lora_state(np.random.default_rng(0))
    clients = PlantedClients(x0)
    clustered = _build("clustered", measure)
    _, _, arrays = train_round(clustered, 1, x0, FakeGrid(NODES), clients.update)
    translation = clustered.assignment[1]
    kept = clustered.adapters[translation].copy()
    # Round 2: both translation clients (nodes 2 and 5) are gone; their cluster has no member.
    _, _, arrays = train_round(clustered, 2, arrays, FakeGrid([1, 3, 4, 6]), clients.update)
    assert _finite(arrays)
    np.testing.assert_array_equal(clustered.adapters[translation], kept)
    log = clustered.round_log(2)
    assert log["cluster_sizes"][str(translation)] == 2  # membership is sticky, not dropped
    sent = list(clustered.configure_train(3, arrays, ConfigRecord(), FakeGrid(NODES)))
    for message in sent:
        client = message.metadata.dst_node_id - 1
        if task_of(client) == 1:
            np.testing.assert_array_equal(flatten_state(to_numpy(message.content["arrays"])), kept)
