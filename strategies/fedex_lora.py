"""FedEx-LoRA: FedAvg of the factors plus the exact residual (Singhal et al. 2024,
https://arxiv.org/abs/2410.09432).

Clients continue from (A_bar, B_bar), the example-weighted factor means, and the residual
R = sum_k p_k B_k A_k - B_bar A_bar, which FedAvg of the factors misses, is folded into the
frozen merged term (``strategies.merged_term``), so base + s * (D + B_bar A_bar) is the exact
average. R travels as low-rank factors, [B_1 ... B_K, B_bar] @ [p_1 A_1; ...; p_K A_K; -A_bar]
(rank (K + 1) r), rather than as dense d_out x d_in matrices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flwr_strategy

from colora.wire import to_record
from strategies import messages
from strategies.maths.averaging import weighted_average
from strategies.maths.lora_products import residual_factors
from strategies.merged_term import MergedTerm
from strategies.ordering import by_client


@dataclass(frozen=True)
class FedExLoraConfig:
    """FedEx-LoRA has no parameters beyond the common ``strategy.*`` keys."""


class FedExLora(flwr_strategy.FedAvg):
    """FedAvg of A and B, plus the residual of the exact average merged on the clients."""

    name = "fedex-lora"
    individual_updates = (
        "fedex-lora computes the residual between the mean of the products B_k A_k and the "
        "product of the means, so the server needs each client's factors in the clear."
    )

    def __init__(self, config: FedExLoraConfig, **common) -> None:
        super().__init__(**common)
        self.config = config
        self.term = MergedTerm()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.term.address(super().configure_train(server_round, arrays, config, grid))

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.term.address(super().configure_evaluate(server_round, arrays, config, grid))

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = by_client(replies)
        if len(replies) < self.min_train_nodes:
            return None, None
        self.term.learn(replies)
        self.term.release_increment()
        states, weights = messages.states(replies), messages.example_counts(replies)
        mean = weighted_average(states, weights)
        self.term.add(server_round, residual_factors(states, weights, mean))
        return to_record(mean), None

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> None:
        self.term.learn(replies)

    def state_arrays(self) -> dict[str, np.ndarray]:
        return self.term.to_arrays()

    def load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.term.load(arrays)

    def round_log(self, server_round: int) -> dict:
        return self.term.log()
