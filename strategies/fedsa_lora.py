"""FedSA-LoRA: share A, keep B personal (Guo et al. 2025, https://arxiv.org/abs/2410.01463).

The paper finds that A learns general knowledge and B client-specific knowledge, so only A is
sent and averaged (A <- sum_k p_k A_k), while each client's B stays on its disk like Sigma_k
(``private-factors = "B"``). The global arrays keep B at its initial zero; each client's own
model (and its exported adapter) uses its private B.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flwr_strategy

from colora import contract
from colora.wire import to_numpy, to_record
from strategies import messages, protocol
from strategies.ordering import by_client

SENT, PRIVATE = ("A",), ("B",)


@dataclass(frozen=True)
class FedSaLoraConfig:
    """FedSA-LoRA has no parameters beyond the common ``strategy.*`` keys."""


class FedSaLora(flwr_strategy.FedAvg):
    """Sends and averages A only; every client keeps its own B."""

    name = "fedsa-lora"
    individual_updates = ""  # the weighted mean of the updates is enough (SecAgg+ ok)
    state_arrays = protocol.no_state
    load_state = protocol.ignore_state
    round_log = protocol.empty_log
    aggregate_evaluate = protocol.skip_evaluate

    def __init__(self, config: FedSaLoraConfig, **common) -> None:
        super().__init__(**common)
        self.config = config
        self.full: ArrayRecord | None = None

    def _send(self, arrays: ArrayRecord, config: ConfigRecord) -> ArrayRecord:
        config[contract.PRIVATE_FACTORS] = ",".join(PRIVATE)
        return messages.select_factors(arrays, SENT)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.full = arrays
        return super().configure_train(server_round, self._send(arrays, config), config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return super().configure_evaluate(server_round, self._send(arrays, config), config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = by_client(replies)
        if len(replies) < self.min_train_nodes or self.full is None:
            return None, None
        return to_record({**to_numpy(self.full), **messages.average(replies)}), None
