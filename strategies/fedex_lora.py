"""FedEx-LoRA: FedAvg of the factors plus the exact residual (Singhal et al. 2024,
https://arxiv.org/abs/2410.09432).

Clients continue from (A_bar, B_bar), the example-weighted factor means, and the residual
R = sum_k p_k B_k A_k - B_bar A_bar, which FedAvg of the factors misses, is folded into the
frozen merged term (``strategies.merged_term``), so base + s * (D + B_bar A_bar) is the exact
average. R travels as low-rank factors, [B_1 ... B_K, B_bar] @ [p_1 A_1; ...; p_K A_K; -A_bar]
(rank (K + 1) r), rather than as dense d_out x d_in matrices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from flwr.app import ArrayRecord, Message

from colora.wire import to_record
from strategies import messages
from strategies.base import in_the_clear
from strategies.maths.averaging import weighted_average
from strategies.maths.lora_products import Factors, residual_factors
from strategies.merged_term import MergesTerm

IN_THE_CLEAR = in_the_clear("fedex-lora computes the residual of every client's factors")


class FedExLora(MergesTerm, name="fedex-lora", individual_updates=IN_THE_CLEAR):
    """FedAvg of A and B, plus the residual of the exact average merged on the clients."""

    def merge(
        self, server_round: int, replies: Sequence[Message]
    ) -> tuple[ArrayRecord | None, Mapping[str, Factors]]:
        states, weights = messages.states(replies), messages.example_counts(replies)
        mean = weighted_average(states, weights)
        return to_record(mean), residual_factors(states, weights, mean)
