"""Robust aggregation of client updates: norm clipping, coordinate-wise median, trimmed mean.

- Coordinate-wise median and trimmed mean: Yin et al. 2018, "Byzantine-Robust Distributed
  Learning: Towards Optimal Statistical Rates", https://arxiv.org/abs/1803.01498. A plain mean can
  be moved arbitrarily far by one client; the median and the β-trimmed mean of every coordinate
  stay within the range of the honest values as long as fewer than half (resp. a β fraction) of
  the clients misbehave.
- Norm clipping: Sun et al. 2019, "Can You Really Backdoor Federated Learning?",
  https://arxiv.org/abs/1911.07963. Scaling each update to norm ≤ M bounds how far any one client
  can move the mean.

``deltas`` is K×D: one flattened update per client (see ``averaging.flatten_state``). Results keep
the input's floating dtype. ``robust_aggregate`` chains the two steps: clip every row, then take
the coordinate-wise median or trimmed mean, one column chunk at a time: no K×D copy is made, and
the norms are float64 sums in index order, so the result is bit-reproducible. Each chunk is
transposed (clients along rows) and sorted row by row: numpy's vectorised sort (x86-simd-sort)
of 100 values is about 6 times faster here than ``np.partition``'s introselect, and the trimmed
mean then sums its values in sorted order, whatever order the clients came in.
"""

from __future__ import annotations

import threading

import numpy as np

from strategies.maths.averaging import ReplyUpdates
from strategies.maths.reproducible import CHUNK, share_work, sum_of_squares

Updates = np.ndarray | ReplyUpdates  # K×D: a matrix, or the replies minus what was sent
_TRANSPOSE = 256  # columns per transposed piece: the K×256 source stays in L1/L2
# Rows whose norm chunks are formed together: 8 × 32 768 float64 (2 MiB) stays in cache; 64 rows
# (16 MiB) were 1.5x slower at K = 100.
_NORM_ROWS = 8


def _as_float(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


def _check_stack(deltas: Updates) -> Updates:
    if isinstance(deltas, ReplyUpdates):
        if len(deltas) == 0:
            raise ValueError("deltas must be K×D with K >= 1, got no replies")
        return deltas
    deltas = _as_float(deltas)
    if deltas.ndim != 2 or deltas.shape[0] == 0:
        raise ValueError(f"deltas must be K×D with K >= 1, got shape {deltas.shape}")
    return deltas


def clip_by_norm(delta: np.ndarray, max_norm: float) -> np.ndarray:
    """``delta`` scaled by min(1, max_norm / ‖delta‖₂); the direction never changes."""
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    delta = _as_float(delta)
    norm = float(np.sqrt(sum_of_squares(delta)))
    if norm <= max_norm:
        return delta.copy()
    return (delta * (max_norm / norm)).astype(delta.dtype)


def _chunk_columns(clients: int) -> int:
    # About 4 MiB of float32 per transposed chunk: in cache, and a few thousand chunks at most.
    return max(256, (1 << 20) // max(clients, 1))


class _ChunkBuffers(threading.local):
    """Each worker thread's K×c source block and c×K transposed chunk (made on first use)."""

    source: np.ndarray | None = None
    transposed: np.ndarray | None = None


def _clipped_chunk(
    deltas: Updates, scales: np.ndarray | None, start: int, stop: int, buffers: _ChunkBuffers
) -> np.ndarray:
    """Columns start:stop as a (stop − start)×K C-ordered copy in this thread's buffer, each
    client's values scaled by its clip factor. Only this chunk is copied, never the K×D matrix
    (``ReplyUpdates`` writes the columns straight from the replies into a K×c block)."""
    K, step = deltas.shape[0], _chunk_columns(deltas.shape[0])
    if buffers.transposed is None or buffers.transposed.shape != (step, K):
        buffers.transposed = np.empty((step, K), deltas.dtype)
        buffers.source = np.empty((K, step), deltas.dtype)
    if isinstance(deltas, np.ndarray):
        block = deltas[:, start:stop]
    else:
        block = deltas.block(start, stop, buffers.source[:, : stop - start])
    chunk = buffers.transposed[: stop - start]
    for piece in range(0, stop - start, _TRANSPOSE):  # cache-sized pieces: ~25% faster
        chunk[piece : piece + _TRANSPOSE] = block[:, piece : piece + _TRANSPOSE].T
    if scales is not None:
        chunk *= scales  # the same float32 product as scaling the row itself
        chunk[:, scales == 0] = 0  # +0, as clip_updates writes (x * 0 could be −0)
    return chunk


def _median_rows(chunk: np.ndarray) -> np.ndarray:
    """Median of every row of ``chunk`` (c×K, sorted in place) in float64; even K averages the
    middle two."""
    K = chunk.shape[1]
    middle = K // 2
    chunk.sort(axis=1)
    if K % 2:
        return chunk[:, middle].astype(np.float64)
    return (chunk[:, middle - 1].astype(np.float64) + chunk[:, middle]) / 2


def _trimmed_rows(chunk: np.ndarray, cut: int) -> np.ndarray:
    """Mean of every row of ``chunk`` (sorted in place) without its ``cut`` smallest and
    largest values. Summing the sorted values makes the mean independent of the client order."""
    K = chunk.shape[1]
    chunk.sort(axis=1)
    return chunk[:, cut : K - cut].mean(axis=1, dtype=np.float64)


def _columnwise(deltas: Updates, scales: np.ndarray | None, reduce) -> np.ndarray:
    """``reduce`` (c×K -> c) applied to every column of the clipped K×D ``deltas``, by chunks.

    Chunks are independent and numpy's sort releases the GIL, so threads share them
    (``reproducible.share_work``); each writes only its own columns of the result, so the
    bits never depend on which thread ran which chunk."""
    D = deltas.shape[1]
    out = np.empty(D, dtype=deltas.dtype)
    step, buffers = _chunk_columns(deltas.shape[0]), _ChunkBuffers()

    def run(start: int) -> None:
        stop = min(start + step, D)
        out[start:stop] = reduce(_clipped_chunk(deltas, scales, start, stop, buffers))

    share_work(run, range(0, D, step))
    return out


def coordinate_median(deltas: np.ndarray) -> np.ndarray:
    """The median of every coordinate over the K clients (D,); even K averages the middle two."""
    return _columnwise(_check_stack(deltas), None, _median_rows)


def _trim_count(trim_fraction: float, clients: int) -> int:
    if not 0.0 <= trim_fraction < 0.5:
        raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
    return int(np.floor(trim_fraction * clients))


def trimmed_mean(deltas: np.ndarray, trim_fraction: float) -> np.ndarray:
    """Per coordinate, drop the ⌊β·K⌋ largest and ⌊β·K⌋ smallest values, then average the rest.

    β = ``trim_fraction`` ∈ [0, 0.5); β = 0 is the plain mean.
    """
    cut = _trim_count(trim_fraction, np.shape(deltas)[0] if np.ndim(deltas) == 2 else 0)
    deltas = _check_stack(deltas)
    return _columnwise(deltas, None, lambda chunk: _trimmed_rows(chunk, cut))


RULES = ("median", "trimmed-mean")


def row_norms(deltas: Updates) -> np.ndarray:
    """‖deltas[k]‖₂ for every row, accumulated in float64 in index order (K,)."""
    deltas = _check_stack(deltas)
    if isinstance(deltas, np.ndarray):
        return np.sqrt([sum_of_squares(row) for row in deltas])
    # sum_of_squares' chunks, written from the replies for a group of rows at a time; numpy
    # sums each row of a 2-D block pairwise as it sums that row alone: the same bits. Groups
    # are independent and numpy's copies and sums release the GIL, so threads share them
    # (``share_work``); each writes only its own rows' totals.
    K, D = deltas.shape
    group = min(K, _NORM_ROWS)
    totals = np.zeros(K)
    buffers = threading.local()

    def run(first: int) -> None:
        if not hasattr(buffers, "narrow"):
            buffers.narrow = np.empty((group, min(CHUNK, D)), deltas.dtype)
            buffers.wide = np.empty(buffers.narrow.shape, np.float64)  # reused, not astype()
        rows = slice(first, min(first + group, K))
        for start in range(0, D, CHUNK):
            stop = min(start + CHUNK, D)
            block = buffers.narrow[: rows.stop - first, : stop - start]
            part = buffers.wide[: rows.stop - first, : stop - start]
            part[...] = deltas.block(start, stop, block, rows)  # the exact float64 cast
            totals[rows] += np.sum(np.square(part, out=part), axis=1)

    share_work(run, range(0, K, group))
    return np.sqrt(totals)


def _clip_scales(deltas: Updates, clip_norm: float) -> tuple[np.ndarray, float, int]:
    """(per-row factor in the rows' dtype, 1 where unclipped; the bound M; rows clipped)."""
    if not clip_norm >= 0:
        raise ValueError(f"clip_norm must be >= 0, got {clip_norm}")
    norms = row_norms(deltas)
    bound = float(clip_norm) if clip_norm > 0 else float(np.median(norms))
    clipped = norms > bound
    factors = np.ones(len(norms), dtype=deltas.dtype)
    if bound > 0:
        for k in np.flatnonzero(clipped):
            # A Python float times a float32 row is a float32 product by float32(bound / norm).
            factors[k] = bound / norms[k]
    else:
        factors[clipped] = 0
    return factors, bound, int(clipped.sum())


def clip_updates(
    deltas: np.ndarray, clip_norm: float = 0.0, *, in_place: bool = False
) -> tuple[np.ndarray, float, int]:
    """Clip every row to norm ≤ M; returns (clipped K×D, M, number of rows that were clipped).

    ``clip_norm`` > 0 is a fixed M. ``clip_norm`` = 0 is adaptive: M = the median of this
    round's row norms. The median is set by the honest majority whenever fewer than half of the
    rows misbehave, so no row can end up longer than some honest update, and it is scale-free:
    multiplying every update by c multiplies M by c, so no bound has to be tuned to the
    learning rate, step count or model. (Tracking a quantile of update norms is also how
    adaptive clipping works in Andrew et al. 2021, https://arxiv.org/abs/1905.03871.)
    M = 0 (the median update is exactly zero) zeroes every non-zero row.

    ``in_place`` clips the rows of ``deltas`` itself (when it is already floating) instead of a
    copy, which saves a K×D buffer.
    """
    deltas = _check_stack(deltas)
    factors, bound, count = _clip_scales(deltas, clip_norm)
    out = deltas if in_place else deltas.copy()
    for k in np.flatnonzero(factors != 1):
        out[k] = out[k] * factors[k] if factors[k] else 0
    return out, bound, count


def robust_aggregate(
    deltas: Updates, rule: str, trim_fraction: float = 0.0, clip_norm: float = 0.0
) -> tuple[np.ndarray, float, int]:
    """``clip_updates`` then ``coordinate_median`` or ``trimmed_mean`` (``rule`` ∈ ``RULES``).

    Returns (aggregate (D,), the clip bound M used, number of clipped rows). Rows are unweighted:
    weighting by a client's reported example count would let one client buy influence.
    ``deltas`` (a K×D matrix, or ``averaging.ReplyUpdates``: the replies minus what was sent,
    never formed) is never modified and never copied whole: clipping is applied to one column
    chunk at a time as the chunk is copied for the median or trimmed mean.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    deltas = _check_stack(deltas)
    cut = _trim_count(trim_fraction, deltas.shape[0])
    factors, bound, count = _clip_scales(deltas, clip_norm)
    scales = factors if count else None
    if rule == "median":
        return _columnwise(deltas, scales, _median_rows), bound, count
    return _columnwise(deltas, scales, lambda chunk: _trimmed_rows(chunk, cut)), bound, count
