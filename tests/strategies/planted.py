"""Planted task structure: six clients on three tasks, each task's updates along its own
direction plus small noise, so a strategy that reads update similarity must find the tasks."""

from __future__ import annotations

import numpy as np

from strategies.maths.averaging import flatten_state, unflatten_state
from tests.strategies.fakes import metrics, sent_state

TASKS = 3


def task_of(client: int) -> int:
    return client % TASKS  # as the by-task partition assigns tasks


class PlantedClients:
    """Node n is client n - 1; its update is direction[task] + noise, on top of what it got."""

    def __init__(self, like: dict[str, np.ndarray], seed: int = 0, noise: float = 0.1) -> None:
        self.rng = np.random.default_rng(seed)
        self.like = like
        size = flatten_state(like).size
        self.directions = self.rng.normal(size=(TASKS, size))
        self.noise = noise

    def delta(self, client: int) -> np.ndarray:
        direction = self.directions[task_of(client)]
        return direction + self.noise * self.rng.normal(size=direction.size)

    def update(self, sent, behaves_like: dict[int, int] | None = None):
        """The reply of node ``sent.dst``; ``behaves_like`` maps a client to the client whose
        task its update follows."""
        client = sent.metadata.dst_node_id - 1
        source = (behaves_like or {}).get(client, client)
        theta = flatten_state(sent_state(sent)) + self.delta(source)
        return unflatten_state(theta.astype(np.float32), self.like), metrics(client)
