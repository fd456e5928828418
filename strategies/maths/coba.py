"""CoBa task weights, applied across federated clients.

CoBa: Convergence Balancer for Multitask Finetuning of LLMs (Gong et al. 2024,
https://arxiv.org/abs/2410.06741). Every round the server holds, per task i, a validation-loss
history whose first point is the loss at the start. With K tasks, window W and τ_DF = 5:

    ℓ_i      = loss_i / loss_i(start)
    α_i      = least-squares slope of ℓ_i over its last W points
    RCS      = softmax_i(K·α_i / Σ_j |α_j|)                 slow tasks (α near 0) gain
    ACS      = softmax_i(−N·α_i / Σ_hist |α_i|)             a task worse than its own past loses
    DF       = T·softmax(−τ_DF·T·α_max / Σ_hist |α_max|)[last]
    ω        = softmax_i(K·(DF·RCS_i + (1 − DF)·ACS_i)),  then ω ← max(ω, 0.1/K), renormalised

"hist" is the per-round slope history since warm-up ended (N = T = its length); α_max at a round
is the slope of the task with the largest ℓ at that round. ACS is a softmax over tasks (as in the
paper and its MFTCoder code), of each task's current slope normalised by its own history. DF is
not clipped to [0, 1]: when the worst task is converging faster than before it exceeds 1 and RCS
dominates; when the worst task turns upwards it drops towards 0 and ACS takes over.
Weights are uniform during warm-up. This follows docs/ALGORITHMS.md, section "CoBa-balanced".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from strategies.maths.averaging import normalized_weights

# τ_DF: the temperature of the divergence factor, 5 in the paper and its reference code.
_DF_TEMPERATURE = 5.0


@dataclass(frozen=True)
class CobaTerms:
    """Every intermediate CoBa quantity of one round, in ``tasks`` order, for logging.

    In warm-up only ``normalized_loss`` and the uniform ``weights`` are set; the rest are None.
    """

    tasks: tuple[str, ...]
    in_warmup: bool
    normalized_loss: np.ndarray  # ℓ_i at the latest point
    weights: np.ndarray  # ω after the floor; sums to 1
    slopes: np.ndarray | None = None  # α_i, the current slopes
    slope_history: np.ndarray | None = None  # K×N: α_i at every round since warm-up
    alpha_max_history: np.ndarray | None = None  # T: α_max at every round since warm-up
    rcs: np.ndarray | None = None
    acs: np.ndarray | None = None
    df: float | None = None


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - np.max(z))
    return e / e.sum()


def _ratio(numerator: np.ndarray, denominator: np.ndarray | float) -> np.ndarray:
    """numerator / denominator, with 0 where the denominator is 0 (all slopes flat)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.broadcast_to(np.asarray(denominator, dtype=np.float64), numerator.shape)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def slope(values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against 0, 1, 2, …: Σ(x − x̄)(y − ȳ) / Σ(x − x̄)²."""
    y = np.asarray(values, dtype=np.float64)
    if y.ndim != 1 or y.size < 2:
        raise ValueError(f"a slope needs at least 2 points, got {y.size}")
    x = np.arange(y.size) - (y.size - 1) / 2
    # Element-wise products and numpy's index-ordered sum: reproducible bits (BLAS ddot may not be).
    return float(np.sum(x * (y - y.mean())) / np.sum(x * x))


def _loss_matrix(histories: Mapping[str, Sequence[float]]) -> tuple[tuple[str, ...], np.ndarray]:
    """Tasks (sorted) and the K×n matrix of ℓ = loss / loss(start)."""
    if not histories:
        raise ValueError("no task histories given")
    tasks = tuple(sorted(histories))
    lengths = {task: len(histories[task]) for task in tasks}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"task histories differ in length: {lengths}")
    losses = np.array([np.asarray(histories[task], dtype=np.float64) for task in tasks])
    if losses.shape[1] == 0:
        raise ValueError("task histories are empty")
    for task, row in zip(tasks, losses, strict=True):
        if not np.all(np.isfinite(row)) or row[0] <= 0:
            raise ValueError(f"task '{task}': losses must be finite with a positive start")
    return tasks, losses / losses[:, :1]


def _window_slopes(ell: np.ndarray, rounds: range, window: int) -> np.ndarray:
    """K×len(rounds): the slope of each task over the ``window`` points ending at each round."""
    return np.array(
        [[slope(row[max(0, t - window + 1) : t + 1]) for t in rounds] for row in ell]
    ).reshape(ell.shape[0], len(rounds))


def coba_terms(
    histories: Mapping[str, Sequence[float]],
    *,
    window: int = 3,
    warmup: int = 2,
    floor_factor: float = 0.1,
) -> CobaTerms:
    """CoBa weights and all their intermediate terms (see the module docstring)."""
    if window < 1 or warmup < 0 or not 0.0 <= floor_factor <= 1.0:
        raise ValueError("need window >= 1, warmup >= 0 and floor_factor in [0, 1]")
    tasks, ell = _loss_matrix(histories)
    K, n = ell.shape
    if n < warmup + 1 or min(window, n) < 2:
        return CobaTerms(tasks, True, ell[:, -1], np.full(K, 1.0 / K))
    rounds = range(max(warmup, 1), n)  # rounds since warm-up ended; each has >= 2 points
    history = _window_slopes(ell, rounds, window)  # K×N
    alpha = history[:, -1]
    worst = ell[:, list(rounds)].argmax(axis=0)  # the task with the largest ℓ at each round
    alpha_max = history[worst, np.arange(len(rounds))]
    N = T = len(rounds)
    rcs = _softmax(K * _ratio(alpha, np.abs(alpha).sum()))
    acs = _softmax(_ratio(-N * alpha, np.abs(history).sum(axis=1)))
    df_scores = _softmax(_ratio(-_DF_TEMPERATURE * T * alpha_max, np.abs(alpha_max).sum()))
    df = float(T * df_scores[-1])
    omega = _softmax(K * (df * rcs + (1.0 - df) * acs))
    # The floor keeps a task that is well ahead from being starved entirely.
    omega = np.maximum(omega, floor_factor / K)
    omega /= omega.sum()
    return CobaTerms(tasks, False, ell[:, -1], omega, alpha, history, alpha_max, rcs, acs, df)


def coba_task_weights(
    histories: Mapping[str, Sequence[float]],
    *,
    window: int = 3,
    warmup: int = 2,
    floor_factor: float = 0.1,
) -> dict[str, float]:
    """Task name -> CoBa weight ω (summing to 1); uniform during warm-up."""
    terms = coba_terms(histories, window=window, warmup=warmup, floor_factor=floor_factor)
    return {task: float(w) for task, w in zip(terms.tasks, terms.weights, strict=True)}


def client_weights(
    client_task_counts: Sequence[Mapping[str, int]], task_weights: Mapping[str, float]
) -> np.ndarray:
    """Client k's weight ∝ Σ_t ω_t·n_{k,t} (its examples per task, weighted by the task's ω)."""
    totals = []
    for index, counts in enumerate(client_task_counts):
        total = 0.0
        for task, count in counts.items():
            if task not in task_weights:
                raise ValueError(f"client {index} reports task '{task}', which has no weight")
            if count < 0:
                raise ValueError(f"client {index} reports {count} examples of task '{task}'")
            total += task_weights[task] * count
        totals.append(total)
    return normalized_weights(totals)
