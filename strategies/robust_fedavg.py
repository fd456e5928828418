"""Robust FedAvg: norm clipping plus a coordinate-wise median or trimmed mean of the updates.

A plain (weighted) mean can be moved arbitrarily far by a single client, e.g. one that scales
its update by 100. This strategy bounds that damage with two classic defences:

- norm clipping (Sun et al. 2019, "Can You Really Backdoor Federated Learning?",
  https://arxiv.org/abs/1911.07963): every update is scaled to L2 norm <= M;
- the coordinate-wise median or beta-trimmed mean (Yin et al. 2018, "Byzantine-Robust
  Distributed Learning: Towards Optimal Statistical Rates", https://arxiv.org/abs/1803.01498):
  per coordinate, the aggregate stays within the range of the honest values while fewer than
  half (median) or a beta fraction (trimmed mean) of the clients misbehave.

Both act on the *update* Delta_k = theta_k - theta_global, where theta_global is the shared
adapter this strategy sent in the round, flattened per client over the sorted keys; the new
adapter is theta_global + robust(Delta_1 .. Delta_K). (Clipping parameters rather than updates
would shrink the model itself.) Updates are unweighted: weighting by the reported
``num-examples`` would let a client buy influence. The maths is ``strategies.maths.robust``.

Heterogeneous ranks (``client-ranks``) are not supported: a zero-padded rank would look like a
coordinate-wise outlier. The server needs each client's update in the clear, so this strategy
cannot run under secure aggregation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flwr_strategy

from colora.wire import to_record
from runconfig.fields import one_of, option, require
from strategies import messages
from strategies.base import Strategy, in_the_clear
from strategies.maths.averaging import ReplyUpdates, unflatten_state
from strategies.maths.robust import RULES, robust_aggregate
from strategies.ordering import by_client

IN_THE_CLEAR = in_the_clear("robust-fedavg takes coordinate-wise medians or trimmed means")


@dataclass(frozen=True)
class RobustFedAvgConfig:
    robust_rule: str = option(
        "trimmed-mean",
        "Robust rule applied per coordinate to the clipped updates: median | trimmed-mean.",
    )
    clip_norm: float = option(
        0.0,
        "L2 bound every client update is clipped to; 0 = adaptive, the median update norm "
        "of the round.",
    )
    trim_fraction: float = option(
        0.2,
        "trimmed-mean: fraction beta in [0, 0.5) of the clients dropped at each end of every "
        "coordinate (floor(beta * K) each side).",
    )

    def __post_init__(self) -> None:
        one_of("strategy", "robust_rule", self.robust_rule, RULES)
        require(self.clip_norm >= 0, "strategy", "clip_norm", self.clip_norm, "must be >= 0")
        require(
            0 <= self.trim_fraction < 0.5,
            "strategy",
            "trim_fraction",
            self.trim_fraction,
            "must be in [0, 0.5)",
        )


class RobustFedAvg(
    Strategy, flwr_strategy.FedAvg, name="robust-fedavg", individual_updates=IN_THE_CLEAR
):
    """FedAvg's sampling; the server step is global + robust(clipped updates)."""

    def __init__(self, config: RobustFedAvgConfig, **common) -> None:
        super().__init__(config, **common)
        self._global: dict[str, np.ndarray] = {}  # float copy of the adapter sent this round
        self._log: tuple[int, dict] | None = None  # (server round, its round_log entry)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = {key: _float_copy(a) for key, a in messages.arrays_of(arrays).items()}
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = by_client(replies)
        if not self._global:
            raise RuntimeError("robust-fedavg: aggregate_train before configure_train")
        states = messages.states(replies)
        keys = sorted(set(self._global).intersection(*states))
        deltas = ReplyUpdates(states, self._global, keys)  # columns read chunk by chunk
        aggregate, bound, clipped = robust_aggregate(
            deltas,
            self.config.robust_rule,
            self.config.trim_fraction,
            self.config.clip_norm,
        )
        aggregate += deltas.sent_flat
        new = dict(self._global)  # keys some reply lacked keep the global value
        new.update(unflatten_state(aggregate, self._global, keys))
        self._log = (
            server_round,
            {
                "robust": {
                    "rule": self.config.robust_rule,
                    "clip_norm_used": bound,
                    "clipped_clients": clipped,
                }
            },
        )
        return to_record(new), None

    def round_log(self, server_round: int) -> dict:
        if self._log is None or self._log[0] != server_round:
            return {}
        return self._log[1]


def _float_copy(array: np.ndarray) -> np.ndarray:
    """A writable copy that keeps a floating dtype (float32 stays float32)."""
    dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.float32
    return np.array(array, dtype=dtype, copy=True)
