"""Client partitioning: determinism, scheme semantics, coverage, and the summary table."""

from __future__ import annotations

from collections import Counter

import pytest

from codetasks.examples import Example
from codetasks.partition import partition_clients, partition_summary

TASKS = ("generation", "translation", "summarization")


def _data(sizes: tuple[int, ...] = (10, 20, 7)) -> dict[str, list[Example]]:
    return {
        task: [Example(task, f"{task}/{i}", "s", "t") for i in range(n)]
        for task, n in zip(TASKS, sizes, strict=True)
    }


def _uids(partitions: list[dict[str, list[Example]]]) -> list[list[str]]:
    return [[e.uid for examples in client.values() for e in examples] for client in partitions]


@pytest.mark.parametrize("scheme", ["by-task", "dirichlet", "iid"])
def test_same_seed_same_partition_other_seed_differs(scheme: str) -> None:
    first = _uids(partition_clients(_data(), 5, scheme, seed=3))
    assert _uids(partition_clients(_data(), 5, scheme, seed=3)) == first
    assert _uids(partition_clients(_data(), 5, scheme, seed=4)) != first


@pytest.mark.parametrize("scheme", ["by-task", "dirichlet", "iid"])
def test_every_example_is_assigned_exactly_once(scheme: str) -> None:
    partitions = partition_clients(_data(), 6, scheme, seed=0, alpha=0.3)
    uids = Counter(uid for client in _uids(partitions) for uid in client)
    expected = {e.uid for examples in _data().values() for e in examples}
    assert set(uids) == expected
    assert set(uids.values()) == {1}
    assert all(sum(map(len, client.values())) >= 1 for client in partitions)
    for client in partitions:  # examples are filed under their own task
        assert all(e.task == task for task, examples in client.items() for e in examples)


def test_by_task_assigns_task_k_mod_t_and_splits_evenly() -> None:
    partitions = partition_clients(_data(), 5, "by-task", seed=0)
    assert [list(client) for client in partitions] == [
        ["generation"], ["translation"], ["summarization"], ["generation"], ["translation"]
    ]  # fmt: skip
    sizes = [sum(map(len, client.values())) for client in partitions]
    assert sizes == [5, 10, 7, 5, 10]


def test_iid_sizes_balanced_within_one() -> None:
    partitions = partition_clients(_data(), 4, "iid", seed=0)
    sizes = [sum(map(len, client.values())) for client in partitions]
    assert sorted(sizes) == [9, 9, 9, 10]
    for client in partitions:  # keys keep the given task order
        assert list(client) == [task for task in TASKS if task in client]


def test_errors() -> None:
    with pytest.raises(ValueError, match="valid: by-task, dirichlet, iid"):
        partition_clients(_data(), 2, "random", seed=0)
    with pytest.raises(ValueError, match="cannot give 38 clients an example each: only 37"):
        partition_clients(_data(), 38, "iid", seed=0)
    with pytest.raises(ValueError, match="at least one client per task: 2 clients for 3 tasks"):
        partition_clients(_data(), 2, "by-task", seed=0)
    with pytest.raises(ValueError, match="task 'summarization' has 1 examples for 2 clients"):
        partition_clients(_data((10, 10, 1)), 6, "by-task", seed=0)
    for alpha in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="dirichlet alpha must be a positive number"):
            partition_clients(_data(), 3, "dirichlet", seed=0, alpha=alpha)


def test_summary_table() -> None:
    partitions = partition_clients(_data(), 4, "by-task", seed=0)
    assert partition_summary(partitions) == "\n".join(
        [
            "client  generation  translation  summarization  total",
            "     0           5            0              0      5",
            "     1           0           20              0     20",
            "     2           0            0              7      7",
            "     3           5            0              0      5",
            " total          10           20              7     37",
        ]
    )
