"""Server-side adaptive optimisers for federated learning: FedAdam and FedYogi.

Reddi et al. 2021, "Adaptive Federated Optimization", https://arxiv.org/abs/2003.00295,
Algorithm 2. The server treats the mean client change Δ_t = mean_k(x_k) − x_t as a negative
pseudo-gradient and, per coordinate:

    m_t = β1·m_{t−1} + (1 − β1)·Δ_t
    v_t = β2·v_{t−1} + (1 − β2)·Δ_t²                              (FedAdam)
    v_t = v_{t−1} − (1 − β2)·Δ_t²·sign(v_{t−1} − Δ_t²)            (FedYogi)
    x_{t+1} = x_t + η·m_t / (√v_t + τ)

As in the paper there is no bias correction. Initial state: m_{−1} = 0 and v_{−1} = τ², the
smallest value the paper allows (it asks for v_{−1} ≥ τ²), so runs match the published algorithm.
Flower's own FedAdam starts v at 0, which makes the first step slightly larger.

States are dicts of arrays keyed like a LoRA state dict. Arithmetic runs in float64; x keeps its
dtype, and m and v are kept in at least float32 so that τ² does not underflow in half precision.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

State = Mapping[str, np.ndarray]


def _moment_dtype(value: np.ndarray) -> np.dtype:
    return np.promote_types(np.asarray(value).dtype, np.float32)


@dataclass
class OptimizerState:
    """First moment m, second moment v (per key, shaped like x) and the number of steps taken."""

    m: dict[str, np.ndarray]
    v: dict[str, np.ndarray]
    step: int

    @classmethod
    def initial(cls, x: State, tau: float) -> OptimizerState:
        """m = 0, v = τ² everywhere, step 0."""
        m = {k: np.zeros(np.shape(value), _moment_dtype(value)) for k, value in x.items()}
        v = {k: np.full(np.shape(value), tau**2, _moment_dtype(value)) for k, value in x.items()}
        return cls(m=m, v=v, step=0)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat dict for checkpoints: "m/<key>", "v/<key>" and "step" (a 0-d int64 array)."""
        arrays = {f"m/{key}": value for key, value in self.m.items()}
        arrays.update({f"v/{key}": value for key, value in self.v.items()})
        arrays["step"] = np.asarray(self.step, dtype=np.int64)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: State) -> OptimizerState:
        """Inverse of ``to_arrays``."""
        if "step" not in arrays:
            raise ValueError("optimizer checkpoint has no 'step' entry")
        m = {key[2:]: np.asarray(value) for key, value in arrays.items() if key.startswith("m/")}
        v = {key[2:]: np.asarray(value) for key, value in arrays.items() if key.startswith("v/")}
        unknown = [key for key in arrays if key != "step" and key[:2] not in ("m/", "v/")]
        if unknown or set(m) != set(v):
            raise ValueError(
                f"malformed optimizer checkpoint (unknown keys {unknown[:3]} or "
                f"m/v key sets differ)"
            )
        return cls(m=m, v=v, step=int(np.asarray(arrays["step"])))


def _check_hyperparameters(eta: float, beta1: float, beta2: float, tau: float) -> None:
    if eta <= 0:
        raise ValueError(f"eta must be > 0, got {eta}")
    if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
        raise ValueError(f"beta1 and beta2 must be in [0, 1), got {beta1}, {beta2}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")


def _check_keys(x: State, mean_delta: State, state: OptimizerState) -> None:
    for name, other in (("mean_delta", mean_delta), ("state.m", state.m), ("state.v", state.v)):
        if set(other) != set(x):
            key = sorted(set(other) ^ set(x))[0]
            raise ValueError(f"{name} and x have different keys (first difference: '{key}')")
        for key, value in x.items():
            if np.shape(other[key]) != np.shape(value):
                raise ValueError(
                    f"key '{key}': {name} has shape {np.shape(other[key])}, x has {np.shape(value)}"
                )


def adaptive_step(
    x: State,
    mean_delta: State,
    state: OptimizerState | None,
    *,
    eta: float,
    beta1: float,
    beta2: float,
    tau: float,
    yogi: bool,
) -> tuple[dict[str, np.ndarray], OptimizerState]:
    """One FedAdam (``yogi=False``) or FedYogi server step; ``state=None`` starts from m = 0,
    v = τ²."""
    _check_hyperparameters(eta, beta1, beta2, tau)
    state = OptimizerState.initial(x, tau) if state is None else state
    _check_keys(x, mean_delta, state)
    new_x, new_m, new_v = {}, {}, {}
    for key, value in x.items():
        dtype = np.asarray(value).dtype
        delta = np.asarray(mean_delta[key], dtype=np.float64)
        m = beta1 * np.asarray(state.m[key], dtype=np.float64) + (1 - beta1) * delta
        v_old = np.asarray(state.v[key], dtype=np.float64)
        delta_sq = delta * delta
        if yogi:
            # Yogi moves v additively towards Δ², so v cannot jump up by a factor as Adam's can.
            v = v_old - (1 - beta2) * delta_sq * np.sign(v_old - delta_sq)
        else:
            v = beta2 * v_old + (1 - beta2) * delta_sq
        step = eta * m / (np.sqrt(v) + tau)
        new_x[key] = (np.asarray(value, dtype=np.float64) + step).astype(dtype)
        new_m[key], new_v[key] = m.astype(_moment_dtype(value)), v.astype(_moment_dtype(value))
    return new_x, OptimizerState(m=new_m, v=new_v, step=state.step + 1)


fedadam_step = functools.partial(adaptive_step, yogi=False)  # one FedAdam server step
fedyogi_step = functools.partial(adaptive_step, yogi=True)  # one FedYogi server step
