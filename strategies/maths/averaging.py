"""Weighted averaging of flattened LoRA state dicts.

FedAvg (McMahan et al. 2017, https://arxiv.org/abs/1602.05629) averages client parameters with
weights p_k = n_k / Σ n_j. Applied to the LoRA factors A and B this is FedIT
(https://arxiv.org/abs/2305.05644); it is *not* the average of the products B_k A_k (see
``lora_products``). Heterogeneous ranks follow HetLoRA (https://arxiv.org/abs/2401.06432): client k
trains the first r_k ranks and the server zero-pads every client to r_max before averaging.

A "state" is a ``Mapping[str, np.ndarray]`` such as PEFT's ``get_peft_model_state_dict`` output,
with keys ``<module>.lora_A.weight`` (shape r×d_in) and ``<module>.lora_B.weight`` (d_out×r).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from colora.keys import State


def normalized_weights(weights: Sequence[float]) -> np.ndarray:
    """p_k = w_k / Σ w_j as float64; rejects empty, negative, non-finite or all-zero weights."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1:
        raise ValueError(f"weights must be one-dimensional, got shape {w.shape}")
    if w.size == 0:
        raise ValueError("weights is empty: there is nothing to average")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"weights contain NaN or Inf at index {int(np.argmin(np.isfinite(w)))}")
    if np.any(w < 0):
        raise ValueError(
            f"weights must be non-negative, got {w[w < 0][0]} at index {int(np.argmax(w < 0))}"
        )
    total = w.sum()
    if total == 0:
        raise ValueError("weights sum to zero: every client has weight 0")
    return w / total


def _check_same_layout(states: Sequence[State]) -> None:
    """Raise ValueError naming the first key whose presence or shape differs from states[0]."""
    reference = states[0]
    for index, state in enumerate(states[1:], start=1):
        missing = sorted(set(reference) - set(state))
        extra = sorted(set(state) - set(reference))
        if missing or extra:
            key = (missing or extra)[0]
            where = "missing from" if missing else "unexpected in"
            raise ValueError(f"key '{key}' is {where} state {index} (key sets differ)")
        for key, value in reference.items():
            if np.shape(state[key]) != np.shape(value):
                raise ValueError(
                    f"key '{key}': state {index} has shape {np.shape(state[key])}, "
                    f"state 0 has {np.shape(value)}"
                )


def weighted_average(states: Sequence[State], weights: Sequence[float]) -> dict[str, np.ndarray]:
    """Σ_k p_k·state_k per key, accumulated in float64 and cast back to the inputs' dtype."""
    if len(states) != len(weights):
        raise ValueError(f"got {len(states)} states but {len(weights)} weights")
    p = normalized_weights(weights)
    _check_same_layout(states)
    averaged: dict[str, np.ndarray] = {}
    for key in states[0]:
        dtype = np.result_type(*(np.asarray(state[key]).dtype for state in states))
        total = np.zeros(np.shape(states[0][key]), dtype=np.float64)
        term = np.empty_like(total)  # p_k * float64(x): one buffer, not two fresh per client
        for p_k, state in zip(p, states, strict=True):
            total += np.multiply(state[key], p_k, out=term, dtype=np.float64)
        # Integer inputs would truncate an average, so only floating dtypes are kept.
        averaged[key] = total.astype(dtype) if np.issubdtype(dtype, np.floating) else total
    return averaged


def flatten_state(
    state: State, keys: Sequence[str] | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """Concatenate the raveled arrays of ``keys`` (default: sorted keys) into one vector,
    written into ``out`` when given (a row of a K x D buffer: no temporary vector)."""
    keys = sorted(state) if keys is None else list(keys)
    if not keys:
        return np.zeros(0) if out is None else out
    return np.concatenate([np.ravel(state[key]) for key in keys], out=out)


def unflatten_state(
    vector: np.ndarray, like: State, keys: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Inverse of ``flatten_state``: cut ``vector`` into the shapes and dtypes of ``like``."""
    keys = sorted(like) if keys is None else list(keys)
    sizes = [int(np.size(like[key])) for key in keys]
    vector = np.ravel(vector)
    if vector.size != sum(sizes):
        raise ValueError(f"vector has {vector.size} elements, the state needs {sum(sizes)}")
    out: dict[str, np.ndarray] = {}
    start = 0
    for key, size in zip(keys, sizes, strict=True):
        template = np.asarray(like[key])
        out[key] = vector[start : start + size].reshape(template.shape).astype(template.dtype)
        start += size
    return out


class ReplyRows:
    """The K x D matrix of the replies' states flattened over ``keys``, without forming it.

    ``block`` writes any columns of any rows into a caller's buffer straight from the replies'
    own arrays (read-only views), cast to ``dtype``, so a chunked reduction (a weighted mean,
    the personalised mixtures) needs no K x D copy: at K = 100 that copy is a gigabyte, and
    faulting in a fresh gigabyte costs seconds in this VM. Every reply must have ``like``'s
    shapes (what the server sent).
    """

    def __init__(
        self,
        states: Sequence[Mapping[str, np.ndarray]],
        like: Mapping[str, np.ndarray],
        keys: Sequence[str],
        dtype: np.dtype | type | None = None,
    ) -> None:
        for key in keys:
            for index, state in enumerate(states):
                if state[key].shape != like[key].shape:
                    raise ValueError(
                        f"reply {index} has shape {state[key].shape} for '{key}', "
                        f"{like[key].shape} was sent (client-ranks is not supported)"
                    )
        default = np.result_type(np.float32, *(like[key].dtype for key in keys))
        self.dtype = np.dtype(default if dtype is None else dtype)
        self._rows = [[np.ravel(state[key]) for key in keys] for state in states]
        sizes = [int(like[key].size) for key in keys]
        self._starts = np.cumsum([0, *sizes])  # where each key begins in a flat row
        self.shape = (len(states), int(self._starts[-1]))

    def __len__(self) -> int:
        return self.shape[0]

    def _pieces(self, start: int, stop: int):
        """(key index, offset in the key, offset in [start, stop), length) covering it."""
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        for index in range(first, len(self._starts) - 1):
            lo, hi = max(start, int(self._starts[index])), min(stop, int(self._starts[index + 1]))
            if lo >= hi:
                if self._starts[index] >= stop:
                    return
                continue
            yield index, lo - int(self._starts[index]), lo - start, hi - lo

    def block(
        self, start: int, stop: int, out: np.ndarray, rows: slice | Sequence[int] = slice(None)
    ) -> np.ndarray:
        """Columns start:stop of ``rows`` (a slice or row indices; default every row) into
        ``out`` (rows x (stop - start))."""
        chosen = self._rows[rows] if isinstance(rows, slice) else [self._rows[i] for i in rows]
        for index, offset, at, n in self._pieces(start, stop):
            pieces = [arrays[index][offset : offset + n] for arrays in chosen]
            np.stack(pieces, out=out[:, at : at + n])  # one call: ~1.5x a loop of K copies
        return out


class MatrixRows:
    """A K x D matrix behind ``ReplyRows``' interface (``shape``, ``dtype``, ``block``)."""

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = np.asarray(matrix)
        if self.matrix.ndim != 2:
            raise ValueError(f"rows must be K×D, got shape {self.matrix.shape}")
        self.shape, self.dtype = self.matrix.shape, self.matrix.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def block(
        self, start: int, stop: int, out: np.ndarray, rows: slice | Sequence[int] = slice(None)
    ) -> np.ndarray:
        out[...] = self.matrix[rows, start:stop]
        return out


Rows = ReplyRows | MatrixRows


def as_rows(rows: np.ndarray | Rows) -> Rows:
    """``rows`` as a block source: a ``ReplyRows``/``MatrixRows`` as it is, a matrix wrapped."""
    return rows if isinstance(rows, ReplyRows | MatrixRows) else MatrixRows(rows)


class ReplyUpdates(ReplyRows):
    """The K x D matrix of updates reply_k - sent over ``keys``, without forming it.

    ``block`` writes any columns of it into a caller's buffer straight from the replies (see
    ``ReplyRows``), so robust-fedavg's median and trimmed mean need no K x D copy. Every value
    is the subtraction reply - sent in the dtype the matrix would have, so reductions give the
    bits they give on the matrix. A zero-padded rank would look like an update, so every reply
    must have the sent shapes.
    """

    def __init__(
        self,
        states: Sequence[Mapping[str, np.ndarray]],
        sent: Mapping[str, np.ndarray],
        keys: Sequence[str],
    ) -> None:
        super().__init__(states, sent, keys)
        self.sent_flat = flatten_state(sent, keys).astype(self.dtype, copy=False)

    def block(
        self, start: int, stop: int, out: np.ndarray, rows: slice | Sequence[int] = slice(None)
    ) -> np.ndarray:
        super().block(start, stop, out, rows)
        out -= self.sent_flat[start:stop]
        return out
