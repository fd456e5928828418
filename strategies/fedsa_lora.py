"""FedSA-LoRA: share A, keep B personal (Guo et al. 2025, https://arxiv.org/abs/2410.01463).

The paper finds that A learns general knowledge and B client-specific knowledge, so only A is
sent and averaged (A <- sum_k p_k A_k), while each client's B stays on its disk like Sigma_k
(``private-factors = "B"``). The global arrays keep B at its initial zero; each client's own
model (and its exported adapter) uses its private B.
"""

from __future__ import annotations

from types import MappingProxyType

from colora import contract
from strategies.base import SendsFactors


class FedSaLora(SendsFactors, name="fedsa-lora"):
    """Sends and averages A only; every client keeps its own B."""

    sent = ("A",)
    train_keys = evaluate_keys = MappingProxyType({contract.PRIVATE_FACTORS: "B"})
