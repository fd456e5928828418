"""What travels between server and clients: shared tensors as Flower ``ArrayRecord`` s.

Keeping the conversion in one place makes the byte accounting honest: the numbers reported
per round are the sizes of exactly these arrays.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from flwr.common.constant import SType
from numpy.lib import format as npy_format


def to_record(state: Mapping[str, torch.Tensor | np.ndarray]) -> ArrayRecord:
    arrays = {}
    for key, value in state.items():
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        arrays[key] = to_array(np.asarray(array))
    return ArrayRecord(arrays)


def to_array(array: np.ndarray) -> Array:
    """``Array(array)`` byte for byte (the .npy file ``np.save`` writes), at a fraction of its
    cost: the header of a dtype and shape is made once and cached (a shared adapter has 420
    tensors of about a dozen shapes), and the data is copied once, straight from the array's
    buffer. A personalised strategy serialises one adapter per client: at K = 100 that is
    42,000 tensors a round, and Flower's own path (``np.save`` into a ``BytesIO``) spent
    ~1.5 s on them. Object and structured dtypes keep Flower's path (which refuses them)."""
    array = np.ascontiguousarray(array)
    if array.dtype.hasobject or array.dtype.fields is not None:
        return Array(array)
    header = _npy_header(npy_format.dtype_to_descr(array.dtype), array.shape)
    body = memoryview(array).cast("B") if array.size else b""
    data = b"".join((header, body))
    return Array(dtype=str(array.dtype), shape=tuple(array.shape), stype=SType.NUMPY, data=data)


@functools.lru_cache(maxsize=1024)
def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """The .npy v1.0 header ``np.save`` writes for a C-ordered array (``descr``, ``shape``)."""
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    npy_format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {key: array.numpy() for key, array in record.items()}


def to_torch(record: ArrayRecord) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(np.array(a, copy=True)) for key, a in to_numpy(record).items()}


def payload_bytes(record: ArrayRecord) -> int:
    """Bytes of tensor data in ``record`` (the figure reported as bytes up/down)."""
    return int(sum(array.numpy().nbytes for array in record.values()))
