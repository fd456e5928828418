"""FedAvg over the shared LoRA factors (FedIT, Zhang et al. 2024, arXiv 2305.05644).

A <- sum_k p_k A_k and B <- sum_k p_k B_k with p_k proportional to n_k. This is inexact for
the product B A (see ALGORITHMS.md, "The inexact-aggregation trap"); the exact methods live
in their own strategies. The maths is ``strategies.maths.averaging.weighted_average``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp import strategy as flwr_strategy

from colora.wire import to_numpy, to_record
from strategies.maths.averaging import weighted_average


@dataclass(frozen=True)
class FedAvgConfig:
    """FedAvg has no parameters beyond the common ``strategy.*`` keys."""


class FedAvg(flwr_strategy.FedAvg):
    """Example-weighted averaging of the shared adapter; replies are pre-screened."""

    name = "fedavg"

    def __init__(self, config: FedAvgConfig, **common) -> None:
        super().__init__(**common)
        self.config = config

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        if len(replies) < self.min_train_nodes:
            return None, None
        states = [to_numpy(r.content["arrays"]) for r in replies]
        weights = [float(r.content["metrics"]["num-examples"]) for r in replies]
        return to_record(weighted_average(states, weights)), None

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> None:
        """Per-task eval metrics differ between clients; ``server.reports`` records them."""
        del server_round, replies

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        del arrays

    def round_log(self, server_round: int) -> dict:
        return {}
