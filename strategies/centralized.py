"""Centralized training: every task's data pooled, one trainer (the upper bound).

Simulation-only by nature (pooling data is what federation exists to avoid). Each round the
server samples nodes exactly as FedAvg would, but sends one message only, to a single trainer
node, with ``pooled-data`` (that node loads every partition's examples, i.e. all the data) and
``steps-scale = K``, the number of nodes FedAvg would have trained: K x the local steps is the
federation's per-round step budget, run by one trainer on the same model. Evaluation runs on
the trainer only, over the pooled validation data, so per-task eval losses are comparable. The
trainer node is kept while it stays connected, so its Sigma_k carries over between rounds.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flwr_strategy

from colora import contract
from strategies.base import NoOptions, Strategy
from strategies.ordering import by_client

NOTHING_SHARED = "centralized pools every client's data on one trainer: nothing to protect."


class Centralized(
    Strategy, flwr_strategy.FedAvg, name="centralized", individual_updates=NOTHING_SHARED
):
    """One pooled-data trainer taking the federation's steps budget each round."""

    def __init__(self, config: NoOptions, **common) -> None:
        super().__init__(config, **common)
        self.trainer: int | None = None

    @property
    def min_replies(self) -> int:
        return 1  # the one pooled-data trainer

    def _to_trainer(self, sampled: list[Message], grid: Grid) -> list[Message]:
        if not sampled:
            return []
        if self.trainer not in set(grid.get_node_ids()):
            self.trainer = min(m.metadata.dst_node_id for m in sampled)
        message = sampled[0]
        return [
            Message(
                content=message.content,
                dst_node_id=self.trainer,
                message_type=message.metadata.message_type,
            )
        ]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        # Flower's own sample size, so K is what FedAvg would train this round.
        k = max(int(len(list(grid.get_node_ids())) * self.fraction_train), self.min_train_nodes)
        config[contract.POOLED_DATA] = True
        config[contract.STEPS_SCALE] = k
        return self._to_trainer(
            list(super().configure_train(server_round, arrays, config, grid)), grid
        )

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config[contract.POOLED_DATA] = True
        return self._to_trainer(
            list(super().configure_evaluate(server_round, arrays, config, grid)), grid
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = by_client(replies)
        return (replies[0].content["arrays"] if replies else None), None
