"""Local-only training: no communication and no aggregation (the lower bound of federation).

Each client trains its own shared adapter, kept on its disk with Sigma_k
(``private-factors = "A,B"``), and receives and sends no tensors: the train and evaluate
messages carry an empty ``arrays`` record, so bytes up and down are zero. Every client starts
from the same seeded init, so the comparison with the federated strategies is like for like.
The global arrays stay the initial adapter; each client's own adapter is exported by its
evaluate round.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flwr_strategy

from colora import contract
from strategies import protocol

PRIVATE = ("A", "B")


@dataclass(frozen=True)
class LocalOnlyConfig:
    """Local-only training has no parameters beyond the common ``strategy.*`` keys."""


class LocalOnly(flwr_strategy.FedAvg):
    """Sends no arrays and aggregates nothing; rounds only pace local training."""

    name = "local-only"
    individual_updates = (
        "local-only aggregates nothing, so there is nothing for secure aggregation to protect."
    )
    state_arrays = protocol.no_state
    load_state = protocol.ignore_state
    round_log = protocol.empty_log
    aggregate_evaluate = protocol.skip_evaluate

    def __init__(self, config: LocalOnlyConfig, **common) -> None:
        super().__init__(**common)
        self.config = config
        self.initial: ArrayRecord | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.initial = arrays
        config[contract.PRIVATE_FACTORS] = ",".join(PRIVATE)
        return super().configure_train(server_round, ArrayRecord(), config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config[contract.PRIVATE_FACTORS] = ",".join(PRIVATE)
        return super().configure_evaluate(server_round, ArrayRecord(), config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if len(list(replies)) < self.min_train_nodes:
            return None, None
        return self.initial, None
