"""Bit-reproducible reductions: the same rows give the same bits in any memory layout.

A float sum depends on its order, and a BLAS kernel may pick its blocking, FMA use and
head/tail handling from the operands' alignment (issue 10: two aggregates of the same replies
differed by one float32 ulp). The aggregation maths therefore uses only two kinds of reduction:

- **Element-wise accumulation in float64, rows in a fixed order** (``weighted_row_sum``,
  ``sum_of_squares``). Each output element is a sequence of IEEE-754 multiplies and adds whose
  order is the row order, so the result does not depend on alignment, strides, SIMD width or
  threads. Work is cut into column chunks that stay in cache, so no K×D temporary is made.
- **BLAS products on operands copied to 64-byte-aligned C-contiguous buffers**
  (``aligned_matmul``), for the few products whose cost rules out element-wise loops (the
  personalised mixtures, K²·D). The kernel OpenBLAS picks then depends on the shapes only.

Independent pieces of such work (column chunks, groups of rows or modules, each writing only its
own part of the output) may run on up to ``WORKERS`` threads (``share_work``): numpy releases
the GIL in its copies, sorts, sums and products, and no piece's operations depend on which
thread ran it, so the bits do not either.

The row order itself is fixed by the strategies, which sort replies by client id
(``strategies.ordering``) before any of this runs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

ALIGNMENT = 64  # bytes: a cache line, and the widest SIMD load (AVX-512)
CHUNK = 1 << 15  # columns per chunk: 32 768 float64 = 256 KiB, inside L2
BLOCK_VALUES = 1 << 22  # values read per block of a K x D block source (16 MiB of float32)
WORKERS = min(2, os.cpu_count() or 1)  # threads of ``share_work`` (this machine has 2 cores)


def aligned_empty(shape: int | tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary.

    ``np.empty`` only promises 16 bytes, so the start is chosen inside a slightly larger
    byte buffer (which the returned view keeps alive).
    """
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = math.prod(shape) * dtype.itemsize  # exact Python ints (np.prod: 5 us a call)
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    start = (-raw.ctypes.data) % ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def is_aligned(array: np.ndarray) -> bool:
    return array.flags.c_contiguous and array.ctypes.data % ALIGNMENT == 0


def aligned_copy(array: np.ndarray, dtype: np.dtype | type | None = None) -> np.ndarray:
    """``array`` as an aligned C-contiguous array of ``dtype``; no copy if it already is one."""
    array = np.asarray(array)
    dtype = array.dtype if dtype is None else np.dtype(dtype)
    if array.dtype == dtype and is_aligned(array):
        return array
    out = aligned_empty(array.shape, dtype)
    out[...] = array
    return out


def share_work(run: Callable[[int], object], pieces: Iterable[int]) -> None:
    """``run(piece)`` for every piece, on up to ``WORKERS`` threads; what a piece raised is
    raised here. The pieces must be independent: each writes only its own part of the output."""
    pieces = list(pieces)
    workers = min(WORKERS, len(pieces))
    if workers <= 1:
        for piece in pieces:
            run(piece)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="fedcolora-maths") as pool:
        list(pool.map(run, pieces))  # list(): re-raise what a piece raised


def aligned_matmul(
    a: np.ndarray, b: np.ndarray, dtype: np.dtype | type, out: np.ndarray | None = None
) -> np.ndarray:
    """a @ b in ``dtype`` with both operands and the result aligned (kernel fixed by shape).

    ``out`` (optional) is an aligned buffer of the result's shape and dtype to write into.
    """
    a, b = aligned_copy(a, dtype), aligned_copy(b, dtype)
    shape = (a.shape[0], b.shape[1])
    if out is None:
        out = aligned_empty(shape, dtype)
    elif out.shape != shape or out.dtype != np.dtype(dtype) or not is_aligned(out):
        raise ValueError(f"out must be an aligned {shape} {np.dtype(dtype)} array")
    return np.matmul(a, b, out=out)


def aligned_gram(x: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    """x @ x.T in ``dtype`` from an aligned copy of x, without copying x.T: numpy hands the
    transposed view of the same buffer to BLAS ``syrk`` (half the flops of a GEMM)."""
    x = aligned_copy(x, dtype)
    return np.matmul(x, x.T, out=aligned_empty((x.shape[0], x.shape[0]), dtype))


def _column_chunks(width: int, chunk: int = CHUNK):
    for start in range(0, width, chunk):
        yield start, min(start + chunk, width)


def weighted_row_sum(
    rows: np.ndarray | Sequence[np.ndarray],
    weights: Sequence[float],
    dtype: np.dtype | type | None = None,
) -> np.ndarray:
    """Σ_k w_k·rows[k] (D,), accumulated in float64 in row order, then cast to ``dtype``.

    ``rows`` is a K×D matrix, a sequence of K equally long 1-D arrays (views are fine: a row
    is read, never copied whole), or a block source such as ``averaging.ReplyRows`` (the
    replies' flat states, never formed: its ``block`` writes a chunk of the used rows into a
    small buffer). Rows with weight 0 are skipped, so a cluster's mean over all clients costs
    only its members. ``dtype`` defaults to the rows' dtype. The bits are the same for every
    kind of ``rows`` holding the same values.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if len(rows) != weights.size:
        raise ValueError(f"got {len(rows)} rows but {weights.size} weights")
    if weights.size == 0:
        raise ValueError("no rows to sum")
    blocks = hasattr(rows, "block")
    width = int(rows.shape[1] if blocks else np.shape(rows[0])[-1])
    if dtype is None:
        dtype = rows.dtype if blocks else np.asarray(rows[0]).dtype
    out = aligned_empty(width, np.dtype(dtype))
    used = np.flatnonzero(weights)
    coefficients = [float(weights[k]) for k in used]
    # Each element's sum is the same sequence of operations whatever the chunks, so a block
    # source is read in chunks of at most BLOCK_VALUES values of its used rows (CHUNK columns
    # of 1000 rows would be a 131 MB buffer, faulted in on every call).
    step = max(4096, min(CHUNK, BLOCK_VALUES // len(used))) if blocks else CHUNK
    total = np.empty(min(step, width), dtype=np.float64)
    term = np.empty_like(total)
    buffer = np.empty((len(used), total.size), rows.dtype) if blocks else None
    for start, stop in _column_chunks(width, step):
        acc, tmp = total[: stop - start], term[: stop - start]
        acc[...] = 0.0
        if blocks:
            parts = rows.block(start, stop, buffer[:, : stop - start], used)
        else:
            parts = [rows[k][start:stop] for k in used]
        add_weighted_rows(acc, parts, coefficients, tmp)
        out[start:stop] = acc
    return out


def add_weighted_rows(
    total: np.ndarray, rows: Sequence[np.ndarray], weights: Sequence[float], term: np.ndarray
) -> None:
    """total += Σ_k weights[k]·rows[k] in float64, rows in order, zero weights skipped: the
    operations every weighted sum of rows here is made of, so sums built from different
    chunks of the same rows (``weighted_row_sum``, ``updates``' FedAvg mean) give the same
    bits. ``term`` is a float64 scratch buffer of ``total``'s shape."""
    for w, row in zip(weights, rows, strict=True):
        if w:
            np.multiply(row, float(w), out=term)  # the product as numpy forms it, then float64
            total += term


def sum_of_squares(vector: np.ndarray) -> float:
    """Σ_i x_i² in float64, chunk by chunk in index order (``np.linalg.norm`` calls BLAS)."""
    vector = np.ravel(vector)
    total = 0.0
    for start, stop in _column_chunks(vector.size):
        part = vector[start:stop].astype(np.float64)
        # numpy's pairwise sum adds by index (8 running sums), whatever the alignment.
        total += float(np.sum(np.square(part, out=part)))
    return total
