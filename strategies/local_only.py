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
from types import MappingProxyType

from flwr.app import ArrayRecord, Message, MetricRecord

from colora import contract
from strategies.base import SendsFactors

NOTHING_SHARED = "local-only aggregates nothing: secure aggregation has nothing to protect."


class LocalOnly(SendsFactors, name="local-only", individual_updates=NOTHING_SHARED):
    """Sends no arrays and aggregates nothing; rounds only pace local training."""

    sent = ()  # both factors stay on each client's disk, like Sigma_k
    train_keys = evaluate_keys = MappingProxyType({contract.PRIVATE_FACTORS: "A,B"})

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.full, None
