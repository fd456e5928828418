"""The LoRA key layout, in one place: how an adapter's state names its factors, and its rank.

A "state" is a ``Mapping[str, np.ndarray]`` such as PEFT's ``get_peft_model_state_dict`` output,
with keys ``<module>.lora_A.weight`` (shape r×d_in) and ``<module>.lora_B.weight`` (d_out×r).
:mod:`colora.adapter` builds these keys, the client and the strategies parse them; all go
through :func:`lora_key` and :func:`split_lora_key` (issue 15). Heterogeneous ranks follow
HetLoRA (Cho et al. 2024, https://arxiv.org/abs/2401.06432): client k trains the first r_k
ranks and the server zero-pads every client to r_max before averaging.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

State = Mapping[str, np.ndarray]

# "<prefix>.lora_A.weight" or, from a full model state dict, "<prefix>.lora_A.<adapter>.weight".
_LORA_KEY = re.compile(r"^(?P<prefix>.+)\.lora_(?P<factor>[AB])(?:\.[^.]+)?\.weight$")


def split_lora_key(key: str) -> tuple[str, str] | None:
    """Return (module prefix, "A" or "B") for a LoRA factor key, or None for any other key."""
    match = _LORA_KEY.match(key)
    if match is None:
        return None
    return match["prefix"], match["factor"]


def lora_key(prefix: str, factor: str) -> str:
    """The state key of factor ``"A"`` or ``"B"`` of the LoRA layer ``prefix`` (PEFT's layout)."""
    if factor not in ("A", "B"):
        raise ValueError(f"a LoRA factor is 'A' or 'B', got {factor!r}")
    return f"{prefix}.lora_{factor}.weight"


def lora_rank(state: State) -> int:
    """The LoRA rank r shared by every lora_A (r×d_in) and lora_B (d_out×r) in ``state``."""
    ranks: dict[str, int] = {}
    for key, value in state.items():
        parsed = split_lora_key(key)
        if parsed is not None:
            ranks[key] = np.shape(value)[0] if parsed[1] == "A" else np.shape(value)[1]
    if not ranks:
        raise ValueError("state has no lora_A / lora_B keys")
    if len(set(ranks.values())) > 1:
        raise ValueError(f"state mixes LoRA ranks {sorted(set(ranks.values()))}")
    return next(iter(ranks.values()))


def _resize_rank(state: State, rank: int, *, grow: bool) -> dict[str, np.ndarray]:
    """Zero-pad (grow) or cut (not grow) the rank axis: rows of lora_A, columns of lora_B."""
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    current = lora_rank(state)
    if grow and rank < current:
        raise ValueError(f"cannot zero-pad rank {current} down to {rank}; use truncate_rank")
    if not grow and rank > current:
        raise ValueError(f"cannot truncate rank {current} up to {rank}; use zero_pad_rank")
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        parsed = split_lora_key(key)
        value = np.asarray(value)
        if parsed is None:
            out[key] = value.copy()
            continue
        axis = 0 if parsed[1] == "A" else 1
        if grow:
            pad = [(0, 0), (0, 0)]
            pad[axis] = (0, rank - current)
            out[key] = np.pad(value, pad)
        else:
            out[key] = np.take(value, np.arange(rank), axis=axis)
    return out


def zero_pad_rank(state: State, rank: int) -> dict[str, np.ndarray]:
    """HetLoRA: pad lora_A with zero rows and lora_B with zero columns up to ``rank``.

    The padded ranks contribute B[:, j]·A[j, :] = 0, so the product B·A is unchanged.
    """
    return _resize_rank(state, rank, grow=True)


def truncate_rank(state: State, rank: int) -> dict[str, np.ndarray]:
    """HetLoRA: keep the first ``rank`` rows of lora_A and columns of lora_B (for small clients)."""
    return _resize_rank(state, rank, grow=False)
