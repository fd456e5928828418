"""FFA-LoRA: freeze A, train and average B only (Sun et al. 2024, https://arxiv.org/abs/2403.12313).

A is the random init every node builds from the run seed (``colora.adapter.attach_adapters``)
and is never trained or sent, so averaging B is exact for the product: sum_k p_k B_k A =
(sum_k p_k B_k) A. Only B travels, halving the bytes of FedAvg for square layers. The server
keeps the full (A, B) adapter as the round's global arrays, so checkpoints and the exported
adapter carry the frozen A.
"""

from __future__ import annotations

from types import MappingProxyType

from colora import contract
from strategies.base import SendsFactors


class FfaLora(SendsFactors, name="ffa-lora"):
    """Sends B only; clients train B with A frozen at its seeded init."""

    sent = ("B",)
    train_keys = MappingProxyType({contract.TRAIN_FACTORS: "B"})
