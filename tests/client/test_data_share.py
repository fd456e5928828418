"""Each simulated client's share of the data: cut once per worker, validation wraps (issue 13)."""

from __future__ import annotations

import pytest

from client import data
from codetasks.examples import Example
from runconfig.schema import parse_run_config

TASKS = ("generation", "translation", "summarization")
SIZES = {"train": 40, "valid": 7}  # 7 validation examples per task: 21 for up to 60 clients


def _examples(task: str, split: str, data_root, source, limit):
    n = SIZES[split] if limit is None else min(SIZES[split], limit)
    return tuple(
        Example(task=task, uid=f"{task}-{split}-{i}", source="s", target="t") for i in range(n)
    )


@pytest.fixture(autouse=True)
def synthetic_data(monkeypatch):
    monkeypatch.setattr(data, "_load_cached", _examples)
    data._partitions.cache_clear()
    yield
    data._partitions.cache_clear()


def _client(partition: int, clients: int, scheme: str):
    cfg = parse_run_config({"model.source": "tiny", "data.partition": scheme})
    node = {"partition-id": partition, "num-partitions": clients}
    return data.client_examples(cfg, data.client_identity(node, cfg))


def _uids(by_task) -> set[str]:
    return {e.uid for v in by_task.values() for e in v}


@pytest.mark.parametrize("scheme", ["iid", "by-task"])
def test_more_clients_than_validation_examples_share_them_and_keep_their_own_training(scheme):
    clients = 60  # 120 training examples, 21 validation examples
    shares = [_client(k, clients, scheme) for k in range(clients)]
    train = [_uids(t) for t, _ in shares]
    assert all(train) and sum(map(len, train)) == len(set().union(*train)) == 120
    valid = [_uids(v) for _, v in shares]
    assert all(valid), "every client holds validation examples"
    assert set().union(*valid) == {f"{t}-valid-{i}" for t in TASKS for i in range(7)}
    # 21 parts (for by-task already a multiple of the 3 tasks): client k takes part k mod 21
    assert all(valid[k] == valid[k % 21] for k in range(clients))
    assert len({frozenset(v) for v in valid}) == 21
    if scheme == "by-task":  # client k holds task k mod 3, for training and validation
        assert all(set(t) == set(v) == {TASKS[k % 3]} for k, (t, v) in enumerate(shares))


def test_by_task_wraps_on_a_multiple_of_the_task_count(monkeypatch):
    monkeypatch.setitem(SIZES, "valid", 5)  # 15 validation examples, 20 clients: 15 parts
    shares = [_client(k, 20, "by-task") for k in range(20)]
    assert all(set(t) == set(v) == {TASKS[k % 3]} for k, (t, v) in enumerate(shares))
    assert len({frozenset(_uids(v)) for _, v in shares}) == 15


def test_fewer_clients_than_examples_cut_every_split_as_before():
    from codetasks.partition import partition_clients

    train, valid = _client(3, 10, "iid")  # seed 42, the default run.seed
    by_task = {t: list(_examples(t, "valid", None, None, None)) for t in TASKS}
    assert _uids(valid) == _uids(partition_clients(by_task, 10, "iid", seed=42)[3])
    assert _uids(train)


def test_the_partition_is_cut_once_per_worker():
    for k in range(30):
        _client(k, 30, "iid")
    assert data._partitions.cache_info().misses == 2  # train and valid, once each
