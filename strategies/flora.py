"""FLoRA: exact aggregation by stacking, with heterogeneous ranks (Wang et al. 2024,
https://arxiv.org/abs/2409.05976).

Every round each client trains a fresh adapter (the seeded initial A, B = 0, so it starts as a
no-op) of its own rank r_k (``strategy.client-ranks``). The server stacks the replies,
B = [B_1 ... B_K] and A = [p_1 A_1; ...; p_K A_K], so B @ A = sum_k p_k B_k A_k exactly, and
clients fold s * B @ A into the frozen merged term that later rounds train on top of
(``strategies.merged_term``: the round's stacked factors travel, rank sum_k r_k, as in the
paper, whose download grows with K). The global arrays stay the fresh adapter; the model is the
base plus the merged term, which is in the checkpoint's strategy state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flwr_strategy

from runconfig.fields import option
from strategies import messages
from strategies.maths.lora_products import stacked_factors
from strategies.merged_term import MergedTerm
from strategies.ordering import by_client


@dataclass(frozen=True)
class FloraConfig:
    client_ranks: str = option("", messages.RANKS_HELP)

    def __post_init__(self) -> None:
        messages.parse_ranks("client_ranks", self.client_ranks)


class Flora(flwr_strategy.FedAvg):
    """Stack the clients' factors and merge them exactly; restart from a fresh adapter."""

    name = "flora"
    individual_updates = (
        "flora stacks every client's A and B factors into the merged term, so the server needs "
        "each update in the clear."
    )

    def __init__(self, config: FloraConfig, **common) -> None:
        super().__init__(**common)
        self.config = config
        self.term = MergedTerm()
        self.fresh: ArrayRecord | None = None  # the round's starting adapter (B = 0)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.fresh is None:
            self.fresh = arrays
        messages.announce_ranks(self.config.client_ranks, arrays, config)
        return self.term.address(super().configure_train(server_round, self.fresh, config, grid))

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages.announce_ranks(self.config.client_ranks, arrays, config)
        return self.term.address(super().configure_evaluate(server_round, arrays, config, grid))

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = by_client(replies)
        if len(replies) < self.min_train_nodes:
            return None, None
        self.term.learn(replies)
        self.term.release_increment()
        increment = stacked_factors(messages.states(replies), messages.example_counts(replies))
        self.term.add(server_round, increment)
        return self.fresh, None

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> None:
        self.term.learn(replies)

    def state_arrays(self) -> dict[str, np.ndarray]:
        return self.term.to_arrays()

    def load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.term.load(arrays)

    def round_log(self, server_round: int) -> dict:
        return self.term.log()
