"""Bound each client's aggregation weight, so one client cannot take over the aggregate.

A reply's weight is the example count it reports, which the server cannot verify: a client
claiming ``num-examples = 1e15`` would otherwise own a FedAvg aggregate. Two bounds apply,
once, to every accepted train reply before any strategy sees it (so every example-weighted
strategy inherits them):

1. **What the configuration allows.** Every fedcolora client loads at most
   ``train.max-train-examples`` examples per task (in simulation before partitioning, in
   deployment from its own files), so a per-task count above it is a false claim and the
   reply is rejected (``count_reason``).
2. **A cap on any client's share** (``strategy.max-client-share``, default 1/2: no single
   party outweighs all the others together). Weights above the cap are lowered to the level
   c at which each capped client holds exactly that share, by water-filling
   (``capped_weights``); per-task counts are scaled by the same factor, so CoBa's
   task-weighted client weights inherit the cap.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def capped_weights(weights, max_share: float) -> np.ndarray:
    """``min(w_k, c)`` with the largest c such that no client's share exceeds ``max_share``.

    Water-filling: with the m largest weights capped at c and the rest summing to R, the cap
    binds when c / (m c + R) = max_share, i.e. c = max_share R / (1 - m max_share). When the
    share cannot be met (max_share K <= 1) every client gets the same weight. Clients of
    weight 0 (an evaluation on no examples) hold no share and are left out; a lone client of
    positive weight keeps it, since no cap can lower a share of 1.
    """
    w = np.asarray(weights, dtype=np.float64)
    positive = w > 0
    if np.count_nonzero(positive) < w.size:
        out = w.copy()
        if np.count_nonzero(positive) > 1:
            out[positive] = capped_weights(w[positive], max_share)
        return out
    if w.size == 0 or max_share >= 1 or w.max() <= max_share * w.sum():
        return w
    if max_share * w.size <= 1:
        return np.full_like(w, w.min())
    desc = np.sort(w)[::-1]
    rest = np.cumsum(desc[::-1])[::-1]  # rest[m] = sum of desc[m:]
    for m in range(1, w.size):
        if m * max_share >= 1:
            break
        cap = max_share * rest[m] / (1 - m * max_share)
        if desc[m] <= cap <= desc[m - 1]:
            return np.minimum(w, cap)
    return np.full_like(w, w.min())


def count_reason(
    num_examples: float,
    task_examples: Mapping[str, float],
    max_task_examples: int,
    max_tasks: int,
) -> str | None:
    """Why a reply's example counts exceed what the configuration lets any client load
    (``max_task_examples`` per task, 0 = no limit, over at most ``max_tasks`` tasks)."""
    if max_task_examples <= 0:
        return None
    for task, count in sorted(task_examples.items()):
        if count > max_task_examples:
            return (
                f"metric 'num-examples.{task}' = {count:g} exceeds train.max-train-examples "
                f"= {max_task_examples}, the most any client loads per task"
            )
    if num_examples > max_task_examples * max_tasks:
        return (
            f"metric 'num-examples' = {num_examples:g} exceeds {max_tasks} tasks x "
            f"train.max-train-examples = {max_task_examples * max_tasks}"
        )
    return None
