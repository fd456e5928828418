"""FedAvg over the shared LoRA factors (FedIT, Zhang et al. 2024, arXiv 2305.05644).

A <- sum_k p_k A_k and B <- sum_k p_k B_k with p_k proportional to n_k. This is inexact for
the product B A (see docs/ALGORITHMS.md, "The inexact-aggregation trap"); the exact methods live
in their own strategies. The maths is ``strategies.maths.averaging.weighted_average``.
With ``strategy.client-ranks`` clients train heterogeneous ranks and replies are zero-padded
(HetLoRA, arXiv 2401.06432).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp import strategy as flwr_strategy

from colora.wire import to_record
from runconfig.fields import option
from strategies import messages
from strategies.base import Strategy
from strategies.ordering import by_client


@dataclass(frozen=True)
class FedAvgConfig:
    client_ranks: str = option("", messages.RANKS_HELP)

    def __post_init__(self) -> None:
        messages.parse_ranks("client_ranks", self.client_ranks)


class FedAvg(Strategy, messages.AnnouncesRanks, flwr_strategy.FedAvg, name="fedavg"):
    """Example-weighted averaging of the shared adapter; replies are pre-screened."""

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return to_record(messages.average(by_client(replies), self.rank)), None
