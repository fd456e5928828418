"""Per-client vectors beyond the last round live on disk, bit for bit, and bad files are not
trusted (issue 13: personal state stays on disk)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import ConfigRecord
from safetensors.numpy import load_file, save_file

from colora.wire import to_numpy
from strategies.vector_store import INDEX_KEY, VectorStore, file_name
from tests.strategies.fakes import FakeGrid, lora_state, sent_state, strategy, train_round
from tests.strategies.planted import PlantedClients

D = 12


def _block(seed: int, clients: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(clients, D)).astype(np.float32)


def _round(store: VectorStore, server_round: int, clients: list[int], block: np.ndarray):
    """What the strategy does: release, overwrite the block in place, hold its rows."""
    store.release(clients)
    block[:] = _block(server_round, len(block))
    store.hold(server_round, clients, block[: len(clients)])
    return {c: block[i].copy() for i, c in enumerate(clients)}


def test_absent_clients_go_to_disk_bit_for_bit_and_only_the_last_round_stays_in_memory(
    tmp_path,
):
    store, block = VectorStore(tmp_path), np.empty((3, D), np.float32)
    first = _round(store, 1, [0, 1, 2], block)
    second = _round(store, 2, [2, 3, 4], block)  # overwrites round 1's block
    assert store.in_memory() == 3 and len(store) == 5 and list(store) == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == [file_name(0, 1), file_name(1, 1)]
    for client in (0, 1):
        np.testing.assert_array_equal(store[client], first[client])
        assert not store[client].flags.writeable  # memory-mapped, never written through
    for client in (2, 3, 4):
        np.testing.assert_array_equal(store[client], second[client])
    assert store.get(9) is None and 9 not in store


def test_without_a_directory_absent_clients_are_copied_out_of_the_block():
    store, block = VectorStore(), np.empty((2, D), np.float32)
    first = _round(store, 1, [0, 1], block)
    _round(store, 2, [1, 2], block)
    assert store.in_memory() == 3
    np.testing.assert_array_equal(store[0], first[0])


def test_a_state_names_its_files_and_a_restart_reads_them_back(tmp_path):
    store, block = VectorStore(tmp_path), np.empty((2, D), np.float32)
    first = _round(store, 1, [0, 1], block)
    second = _round(store, 2, [1, 2], block)
    state = store.state()
    assert sorted(state) == [INDEX_KEY, "mixture/1", "mixture/2"]  # client 0 is on disk
    np.testing.assert_array_equal(state[INDEX_KEY], [[1, 2, 0], [2, 2, 0], [0, 1, 1]])
    save_file(state, tmp_path.parent / "state.safetensors")  # as the checkpoint writes it
    restarted = VectorStore(tmp_path)
    restarted.load(load_file(tmp_path.parent / "state.safetensors"))
    assert list(restarted) == [0, 1, 2] and restarted.in_memory() == 2
    np.testing.assert_array_equal(restarted[0], first[0])
    np.testing.assert_array_equal(restarted[2], second[2])
    # the restarted store spills its checkpointed rows under their own rounds
    third = _round(restarted, 3, [0], np.empty((1, D), np.float32))
    assert file_name(1, 2) in {p.name for p in tmp_path.iterdir()}
    np.testing.assert_array_equal(restarted[1], second[1])
    np.testing.assert_array_equal(restarted[0], third[0])


def test_files_no_loadable_checkpoint_names_are_deleted(tmp_path):
    store, block = VectorStore(tmp_path), np.empty((1, D), np.float32)
    _round(store, 1, [0], block)
    _round(store, 2, [1], block)  # 0-r1 written
    store.state()  # checkpoint 2 names 0-r1
    _round(store, 3, [0], block)  # 1-r2 written; 0 is back in memory
    store.state()  # checkpoint 3 names 1-r2; 0-r1 kept for checkpoint 2, now the fallback
    assert {p.name for p in tmp_path.iterdir()} == {file_name(0, 1), file_name(1, 2)}
    (tmp_path / ".x.npy.tmp").write_bytes(b"torn")  # a write that was cut short
    _round(store, 4, [1], block)  # 0-r3 written
    store.state()  # checkpoint 4 names 0-r3; checkpoint 3 names 1-r2
    assert {p.name for p in tmp_path.iterdir()} == {file_name(0, 3), file_name(1, 2)}


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda p: p.unlink(),
        lambda p: p.write_bytes(b"not a numpy file"),
        lambda p: p.write_bytes(p.read_bytes()[:-8]),  # truncated
        lambda p: np.save(p, np.zeros(D, np.float64)),
        lambda p: np.save(p, np.zeros((2, D), np.float32)),
        lambda p: np.save(p, np.zeros(D + 1, np.float32)),
        lambda p: np.save(p, np.full(D, np.nan, np.float32)),
        lambda p: np.save(p, np.zeros(D, np.float32).astype(">f4")),
        lambda p: np.save(p, np.array([{"x": 1}], object), allow_pickle=True),
    ],
)
def test_a_bad_file_is_not_trusted_and_the_client_is_forgotten(tmp_path, caplog, corrupt):
    store, block = VectorStore(tmp_path), np.empty((1, D), np.float32)
    _round(store, 1, [0], block)
    _round(store, 2, [1], block)
    corrupt(tmp_path / file_name(0, 1))
    with caplog.at_level(logging.WARNING):
        assert store.get(0) is None
    assert "forgetting client 0" in caplog.text
    assert 0 not in store and list(store) == [1]


def test_a_malformed_index_is_ignored_not_fatal(tmp_path, caplog):
    store = VectorStore(tmp_path)
    with caplog.at_level(logging.WARNING):
        store.load({INDEX_KEY: np.zeros((2, 2), np.int64), "mixture/3": np.ones(D, np.float32)})
    assert "malformed" in caplog.text and list(store) == [3]


def _personal_messages(sim, server_round, global_arrays, nodes):
    sent = sim.configure_train(server_round, global_arrays, ConfigRecord(), FakeGrid(nodes))
    return {m.metadata.dst_node_id: sent_state(m) for m in sent}


def test_similarity_weighted_on_disk_sends_and_checkpoints_the_same_bits(tmp_path):
    """Rounds over changing subsets of 8 clients: the strategy with a directory sends every
    client the bits the all-in-memory one sends, holds only the last round in memory, and a
    restart from its state holds the same mixtures."""
    x0 = lora_state(np.random.default_rng(0))
    planted = PlantedClients(x0)

    def update(sent):  # the same reply whatever order Flower samples the nodes in
        planted.rng = np.random.default_rng(sent.metadata.dst_node_id)
        return planted.update(sent)

    memory = strategy("similarity-weighted", tau=0.5, mixing=1.0, **{"top-peers": 2})
    disk = strategy("similarity-weighted", tau=0.5, mixing=1.0, **{"top-peers": 2})
    disk.attach(tmp_path, None)
    rounds = [[1, 2, 3, 4], [3, 4, 5, 6], [1, 6, 7, 8], [2, 5, 7, 8]]
    arrays, states = {"memory": x0, "disk": x0}, []
    for server_round, nodes in enumerate(rounds, start=1):
        for name, sim in (("memory", memory), ("disk", disk)):
            _, _, arrays[name] = train_round(
                sim, server_round, arrays[name], FakeGrid(nodes), update
            )
        a, b = arrays["memory"].to_numpy_ndarrays(), arrays["disk"].to_numpy_ndarrays()
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        states = [*states[-1:], disk.state_arrays()]  # the server checkpoints every round
    assert disk.mixtures.in_memory() == 4 and len(disk.mixtures) == 8
    named = [{file_name(c, r) for c, r, on_disk in s[INDEX_KEY] if on_disk} for s in states]
    assert len(named[1]) == 4  # clients 0, 1, 3, 5 (node - 1) are on disk after round 4
    assert {p.name for p in (tmp_path / "mixtures").iterdir()} == named[0] | named[1]
    every = list(range(1, 9))
    expected = _personal_messages(memory, 5, arrays["memory"], every)
    got = _personal_messages(disk, 5, arrays["disk"], every)
    restarted = strategy("similarity-weighted", tau=0.5, mixing=1.0, **{"top-peers": 2})
    restarted.attach(tmp_path, None)
    restarted.load_state(disk.state_arrays())
    for node in every:
        for key, value in expected[node].items():
            np.testing.assert_array_equal(got[node][key], value)
    assert list(restarted.mixtures) == list(memory.mixtures) == list(range(8))
    for client in range(8):
        np.testing.assert_array_equal(restarted.mixtures[client], memory.mixtures[client])


def test_a_checkpointed_mixture_of_the_wrong_size_is_not_sent(caplog):
    """The checkpoint validates arrays, not the strategy state's shapes: a stored mixture that
    does not fit the adapter is replaced by the global adapter with a warning."""
    x0 = lora_state(np.random.default_rng(0))
    sim = strategy("similarity-weighted", tau=0.5, mixing=1.0)
    _, replies, global_1 = train_round(sim, 1, x0, FakeGrid([1, 2, 3]), PlantedClients(x0).update)
    state = sim.state_arrays()
    state["mixture/0"] = state["mixture/0"][:-1]
    restarted = strategy("similarity-weighted", tau=0.5, mixing=1.0)
    restarted.load_state(state)
    restarted.sender.nodes.learn(replies)
    with caplog.at_level(logging.WARNING):
        sent = _personal_messages(restarted, 2, global_1, [1, 2])
    assert "client 0: stored mixture of" in caplog.text
    for key, value in to_numpy(global_1).items():
        np.testing.assert_array_equal(sent[1][key], value)  # node 1 hosts client 0
    assert not all(np.array_equal(sent[2][k], v) for k, v in to_numpy(global_1).items())
