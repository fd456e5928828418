"""FFA-LoRA: freeze A, train and average B only (Sun et al. 2024, https://arxiv.org/abs/2403.12313).

A is the random init every node builds from the run seed (``colora.adapter.attach_adapters``)
and is never trained or sent, so averaging B is exact for the product: sum_k p_k B_k A =
(sum_k p_k B_k) A. Only B travels, halving the bytes of FedAvg for square layers. The server
keeps the full (A, B) adapter as the round's global arrays, so checkpoints and the exported
adapter carry the frozen A.
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

SENT = ("B",)


@dataclass(frozen=True)
class FfaLoraConfig:
    """FFA-LoRA has no parameters beyond the common ``strategy.*`` keys."""


class FfaLora(flwr_strategy.FedAvg):
    """Sends B only; clients train B with A frozen at its seeded init."""

    name = "ffa-lora"
    individual_updates = ""  # the weighted mean of the updates is enough (SecAgg+ ok)
    state_arrays = protocol.no_state
    load_state = protocol.ignore_state
    round_log = protocol.empty_log
    aggregate_evaluate = protocol.skip_evaluate

    def __init__(self, config: FfaLoraConfig, **common) -> None:
        super().__init__(**common)
        self.config = config
        self.full: ArrayRecord | None = None  # the global (A, B); A never changes

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.full = arrays
        config[contract.TRAIN_FACTORS] = ",".join(SENT)
        sent = messages.select_factors(arrays, SENT)
        return super().configure_train(server_round, sent, config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        sent = messages.select_factors(arrays, SENT)
        return super().configure_evaluate(server_round, sent, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = by_client(replies)
        if len(replies) < self.min_train_nodes or self.full is None:
            return None, None
        return to_record({**to_numpy(self.full), **messages.average(replies)}), None
