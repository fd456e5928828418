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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flwr.app import ArrayRecord, ConfigRecord, Message

from runconfig.fields import option
from strategies import messages
from strategies.base import in_the_clear
from strategies.maths.lora_products import Factors, stacked_factors
from strategies.merged_term import MergesTerm

IN_THE_CLEAR = in_the_clear("flora stacks every client's A and B factors into the merged term")


@dataclass(frozen=True)
class FloraConfig:
    client_ranks: str = option("", messages.RANKS_HELP)

    def __post_init__(self) -> None:
        messages.parse_ranks("client_ranks", self.client_ranks)


class Flora(MergesTerm, name="flora", individual_updates=IN_THE_CLEAR):
    """Stack the clients' factors and merge them exactly; restart from a fresh adapter."""

    def __init__(self, config: FloraConfig, **common) -> None:
        super().__init__(config, **common)
        self.fresh: ArrayRecord | None = None  # the round's starting adapter (B = 0)

    def train_arrays(self, arrays: ArrayRecord, config: ConfigRecord) -> ArrayRecord:
        if self.fresh is None:
            self.fresh = arrays
        messages.announce_ranks(self.config.client_ranks, arrays, config)
        return self.fresh

    def evaluate_arrays(self, arrays: ArrayRecord, config: ConfigRecord) -> ArrayRecord:
        messages.announce_ranks(self.config.client_ranks, arrays, config)
        return arrays

    def merge(
        self, server_round: int, replies: Sequence[Message]
    ) -> tuple[ArrayRecord | None, Mapping[str, Factors]]:
        return self.fresh, stacked_factors(
            messages.states(replies), messages.example_counts(replies)
        )
