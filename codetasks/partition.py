"""Split multi-task examples across federated clients, deterministically for a seed.

Schemes:
- ``by-task``: client k holds task k mod T (tasks in the given order), and each task's examples
  are split IID among its clients — the task-heterogeneous setting of federated multi-task
  fine-tuning.
- ``dirichlet``: each client holds a Dirichlet(α) mixture of tasks, with the task as the label
  (Hsu et al. 2019, arXiv 1909.06335; Yurochkin et al. 2019, arXiv 1905.12022) via Flower
  Datasets' ``DirichletPartitioner``; every client gets at least one example.
- ``iid``: all examples shuffled together and cut into equal shards (``IidPartitioner``).

A partition maps client index → task → examples; a client lists only tasks it holds, in the
given task order.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from codetasks.examples import Example

if TYPE_CHECKING:
    import datasets
    from flwr_datasets.partitioner import Partitioner

# Flower Datasets and Hugging Face datasets are imported by the two schemes that use them, not
# here: importing flwr_datasets pulls in its plotting stack (seaborn, scipy, matplotlib) and
# datasets pulls in pandas and pyarrow, ~5 s of CPU in every ClientApp process, while the
# default by-task scheme needs neither.

SCHEMES: tuple[str, ...] = ("by-task", "dirichlet", "iid")
ClientData = dict[str, list[Example]]


def _flatten(examples_by_task: Mapping[str, Sequence[Example]]) -> list[Example]:
    return [example for examples in examples_by_task.values() for example in examples]


def _group(examples: list[Example], tasks: Sequence[str]) -> ClientData:
    """Group one client's examples by task, keeping each task's order and the task order."""
    grouped = {task: [e for e in examples if e.task == task] for task in tasks}
    return {task: group for task, group in grouped.items() if group}


def partition_by_task(
    examples_by_task: Mapping[str, Sequence[Example]], num_clients: int, seed: int
) -> list[ClientData]:
    """Client k holds task ``k mod T``; a task's examples are split IID among its clients."""
    tasks = list(examples_by_task)
    if num_clients < len(tasks):
        raise ValueError(
            f"by-task needs at least one client per task: {num_clients} clients for "
            f"{len(tasks)} tasks ({', '.join(tasks)})"
        )
    rng = np.random.default_rng(seed)
    partitions: list[ClientData] = [{} for _ in range(num_clients)]
    for t, task in enumerate(tasks):
        clients = list(range(t, num_clients, len(tasks)))
        examples = list(examples_by_task[task])
        if len(examples) < len(clients):
            raise ValueError(
                f"task {task!r} has {len(examples)} examples for {len(clients)} clients"
            )
        order = rng.permutation(len(examples))
        for client, shard in zip(clients, np.array_split(order, len(clients)), strict=True):
            partitions[client][task] = [examples[i] for i in shard]
    return partitions


def _indices_dataset(examples: list[Example]) -> datasets.Dataset:
    import datasets

    return datasets.Dataset.from_dict(
        {"index": list(range(len(examples))), "task": [e.task for e in examples]}
    )


def _apply_partitioner(
    partitioner: Partitioner, examples: list[Example], tasks: Sequence[str], num_clients: int
) -> list[ClientData]:
    partitioner.dataset = _indices_dataset(examples)
    shards = [partitioner.load_partition(k)["index"] for k in range(num_clients)]
    return [_group([examples[i] for i in shard], tasks) for shard in shards]


def partition_dirichlet(
    examples_by_task: Mapping[str, Sequence[Example]], num_clients: int, seed: int, alpha: float
) -> list[ClientData]:
    """Per task, Dirichlet(α) proportions over clients; resampled until no client is empty."""
    from flwr_datasets.partitioner import DirichletPartitioner

    if not alpha > 0:  # also NaN, which Flower would turn into empty draws
        raise ValueError(f"dirichlet alpha must be a positive number, got {alpha}")

    examples = _flatten(examples_by_task)
    partitioner = DirichletPartitioner(
        num_partitions=num_clients,
        partition_by="task",
        alpha=float(alpha),
        min_partition_size=1,
        self_balancing=False,
        shuffle=True,
        seed=seed,
    )
    try:
        with warnings.catch_warnings():  # each redraw warns; a final failure raises below
            warnings.filterwarnings("ignore", message="The specified min_partition_size")
            return _apply_partitioner(partitioner, examples, list(examples_by_task), num_clients)
    except ValueError as error:  # Flower gives up after 10 draws that leave a client empty
        raise ValueError(
            f"dirichlet partition (alpha={alpha}) left a client without examples in every "
            f"draw for {num_clients} clients and {len(examples)} examples; raise alpha or use "
            f"fewer clients ({error})"
        ) from error


def partition_iid(
    examples_by_task: Mapping[str, Sequence[Example]], num_clients: int, seed: int
) -> list[ClientData]:
    """All examples shuffled together, then cut into ``num_clients`` contiguous shards."""
    from flwr_datasets.partitioner import IidPartitioner

    examples = _flatten(examples_by_task)
    # IidPartitioner shards contiguously without shuffling, so shuffle first.
    order = np.random.default_rng(seed).permutation(len(examples))
    shuffled = [examples[i] for i in order]
    partitioner = IidPartitioner(num_partitions=num_clients)
    return _apply_partitioner(partitioner, shuffled, list(examples_by_task), num_clients)


def partition_clients(
    examples_by_task: Mapping[str, Sequence[Example]],
    num_clients: int,
    scheme: str,
    *,
    seed: int,
    alpha: float = 0.5,
) -> list[dict[str, list[Example]]]:
    """Partition ``examples_by_task`` over ``num_clients`` clients with ``scheme``."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; valid: {', '.join(SCHEMES)}")
    total = sum(len(examples) for examples in examples_by_task.values())
    if num_clients < 1:
        raise ValueError(f"num_clients must be at least 1, got {num_clients}")
    if num_clients > total:
        raise ValueError(f"cannot give {num_clients} clients an example each: only {total}")
    if scheme == "by-task":
        return partition_by_task(examples_by_task, num_clients, seed)
    if scheme == "dirichlet":
        return partition_dirichlet(examples_by_task, num_clients, seed, alpha)
    return partition_iid(examples_by_task, num_clients, seed)


def partition_summary(partitions: Sequence[Mapping[str, Sequence[Example]]]) -> str:
    """A table of example counts: one row per client, one column per task, plus totals."""
    tasks = list(dict.fromkeys(task for client in partitions for task in client))
    header = ["client", *tasks, "total"]
    rows = [
        [str(k), *(str(len(client.get(t, ()))) for t in tasks), str(sum(map(len, client.values())))]
        for k, client in enumerate(partitions)
    ]
    column_totals = [sum(len(client.get(t, ())) for client in partitions) for t in tasks]
    rows.append(["total", *map(str, column_totals), str(sum(column_totals))])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.rjust(width) for cell, width in zip(cells, widths, strict=True))

    return "\n".join([line(header), *map(line, rows)])
