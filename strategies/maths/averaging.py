"""Weighted averaging of flattened LoRA state dicts, and HetLoRA rank padding.

FedAvg (McMahan et al. 2017, https://arxiv.org/abs/1602.05629) averages client parameters with
weights p_k = n_k / Σ n_j. Applied to the LoRA factors A and B this is FedIT
(https://arxiv.org/abs/2305.05644); it is *not* the average of the products B_k A_k (see
``lora_products``). Heterogeneous ranks follow HetLoRA (https://arxiv.org/abs/2401.06432): client k
trains the first r_k ranks and the server zero-pads every client to r_max before averaging.

A "state" is a ``Mapping[str, np.ndarray]`` such as PEFT's ``get_peft_model_state_dict`` output,
with keys ``<module>.lora_A.weight`` (shape r×d_in) and ``<module>.lora_B.weight`` (d_out×r).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

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
        for p_k, state in zip(p, states, strict=True):
            total += p_k * np.asarray(state[key], dtype=np.float64)
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


def state_delta(after: State, before: State) -> dict[str, np.ndarray]:
    """after − before per key (what a client changed in a round); key sets and shapes must match."""
    _check_same_layout([before, after])
    return {key: np.asarray(after[key]) - np.asarray(before[key]) for key in before}


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
