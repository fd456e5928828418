"""What travels between server and clients: shared tensors as Flower ``ArrayRecord`` s.

Keeping the conversion in one place makes the byte accounting honest: the numbers reported
per round are the sizes of exactly these arrays.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord


def to_record(state: Mapping[str, torch.Tensor | np.ndarray]) -> ArrayRecord:
    arrays = {}
    for key, value in state.items():
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        arrays[key] = Array(np.ascontiguousarray(array))
    return ArrayRecord(arrays)


def to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {key: array.numpy() for key, array in record.items()}


def to_torch(record: ArrayRecord) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(np.array(a, copy=True)) for key, a in to_numpy(record).items()}


def payload_bytes(record: ArrayRecord) -> int:
    """Bytes of tensor data in ``record`` (the figure reported as bytes up/down)."""
    return int(sum(array.numpy().nbytes for array in record.values()))
