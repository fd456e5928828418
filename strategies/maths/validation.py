"""Checks on a client's reply before the server aggregates it.

A malformed or poisoned reply must be dropped with a reason the operator can read, not crash the
round or silently corrupt the average (a single NaN spreads to every client through the mean).
The checks run cheapest first: key sets, shapes, dtypes, payload size, and last the NaN/Inf scan,
which reads every value. Both checks return None when the update is acceptable and otherwise a
one-line reason that names the offending key.

``check_rank_compatible`` is the HetLoRA variant (https://arxiv.org/abs/2401.06432): a client with
a smaller budget may train only the first r_k ≤ r ranks, so it sends lora_A as r_k×d_in and
lora_B as d_out×r_k; the server then zero-pads it (``colora.keys.zero_pad_rank``). Every module of
one reply must use the same r_k, and every other key must match the reference exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from colora.keys import split_lora_key

State = Mapping[str, np.ndarray]


def _check_keys(update: State, reference: State) -> str | None:
    missing = sorted(set(reference) - set(update))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        return f"missing key '{missing[0]}'{more}"
    unexpected = sorted(set(update) - set(reference))
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        return f"unexpected key '{unexpected[0]}'{more}"
    return None


def _check_arrays(
    update: State,
    expected_shapes: Mapping[str, tuple[int, ...]],
    reference: State,
    max_bytes: int | None,
) -> str | None:
    """Type, shape, dtype, size and finiteness, in that order, against the expected layout."""
    for key in sorted(reference):
        value = update[key]
        if not isinstance(value, np.ndarray):
            return f"key '{key}': expected a numpy array, got {type(value).__name__}"
        if value.shape != expected_shapes[key]:
            return f"key '{key}': expected shape {expected_shapes[key]}, got {value.shape}"
        expected_dtype = np.asarray(reference[key]).dtype
        if value.dtype != expected_dtype:
            return f"key '{key}': expected dtype {expected_dtype}, got {value.dtype}"
    total = sum(update[key].nbytes for key in reference)
    if max_bytes is not None and total > max_bytes:
        return f"payload is {total} bytes, over the limit of {max_bytes} bytes"
    for key in sorted(reference):
        value = update[key]
        if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            return f"key '{key}' contains NaN or Inf ({bad} non-finite values)"
    return None


def check_update(update: State, reference: State, *, max_bytes: int | None = None) -> str | None:
    """None if ``update`` has exactly the keys, shapes and dtypes of ``reference``, all values
    finite and at most ``max_bytes`` bytes of arrays in total; otherwise the reason it does not."""
    reason = _check_keys(update, reference)
    if reason is not None:
        return reason
    shapes = {key: np.shape(value) for key, value in reference.items()}
    return _check_arrays(update, shapes, reference, max_bytes)


def _update_rank(update: State, reference: State) -> tuple[int | None, str | None]:
    """The single LoRA rank r_k of ``update`` (None if it has no LoRA keys), or a reason."""
    ranks: dict[str, int] = {}
    for key in sorted(reference):
        parsed = split_lora_key(key)
        value = update[key]
        if parsed is None or not isinstance(value, np.ndarray) or value.ndim != 2:
            continue
        ranks[key] = value.shape[0] if parsed[1] == "A" else value.shape[1]
    if not ranks:
        return None, None
    if len(set(ranks.values())) > 1:
        first = next(iter(ranks))
        other = next(key for key in ranks if ranks[key] != ranks[first])
        return None, (
            f"LoRA ranks differ within the update: '{first}' has rank {ranks[first]}, "
            f"'{other}' has rank {ranks[other]}"
        )
    return next(iter(ranks.values())), None


def check_rank_compatible(
    update: State, reference: State, *, max_bytes: int | None = None
) -> str | None:
    """Like ``check_update``, but accepts LoRA factors of a smaller rank r_k (1 ≤ r_k ≤ r).

    lora_A must be r_k×d_in and lora_B d_out×r_k, with d_in, d_out and r from ``reference``.
    """
    reason = _check_keys(update, reference)
    if reason is not None:
        return reason
    rank, reason = _update_rank(update, reference)
    if reason is not None:
        return reason
    shapes: dict[str, tuple[int, ...]] = {}
    for key, value in reference.items():
        shape = tuple(np.shape(value))
        parsed = split_lora_key(key)
        if parsed is not None and rank is not None and len(shape) == 2:
            full_rank = shape[0] if parsed[1] == "A" else shape[1]
            if not 1 <= rank <= full_rank:
                return f"key '{key}': rank {rank} is outside 1..{full_rank}"
            shape = (rank, shape[1]) if parsed[1] == "A" else (shape[0], rank)
        shapes[key] = shape
    return _check_arrays(update, shapes, reference, max_bytes)
