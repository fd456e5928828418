"""FedAdam on the shared LoRA factors (Reddi et al. 2021, https://arxiv.org/abs/2003.00295).

The server averages the clients' factors (FedAvg weights, zero-padding heterogeneous ranks),
treats Delta = mean - x as a negative pseudo-gradient and takes one Adam step on the global
adapter. The step is ``strategies.maths.server_opt.fedadam_step`` (Algorithm 2 of the paper, no
bias correction, v starts at tau^2), not Flower's own, whose v starts at 0. The moments m and v
are strategy state, so they survive a server restart. ``fedyogi`` subclasses this strategy
and swaps in its own step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp import strategy as flwr_strategy

from colora.wire import to_record
from runconfig.fields import option, require
from strategies import messages
from strategies.base import Strategy
from strategies.maths.server_opt import OptimizerState, fedadam_step
from strategies.ordering import by_client

_OPT = "opt/"  # prefix of the optimiser's arrays in the checkpoint


@dataclass(frozen=True)
class FedOptConfig:
    server_learning_rate: float = option(0.01, "Server step size eta of FedAdam / FedYogi.")
    server_beta1: float = option(0.9, "Server first-moment decay beta1.")
    server_beta2: float = option(0.99, "Server second-moment decay beta2.")
    server_epsilon: float = option(1e-3, "Adaptivity tau of FedAdam / FedYogi (v starts at tau^2).")
    client_ranks: str = option("", messages.RANKS_HELP)

    def __post_init__(self) -> None:
        for name in ("server_learning_rate", "server_epsilon"):
            require(getattr(self, name) > 0, "strategy", name, getattr(self, name), "must be > 0")
        for name in ("server_beta1", "server_beta2"):
            require(
                0 <= getattr(self, name) < 1,
                "strategy",
                name,
                getattr(self, name),
                "must be in [0, 1)",
            )
        messages.parse_ranks("client_ranks", self.client_ranks)


def opt_arrays(state: OptimizerState | None) -> dict[str, np.ndarray]:
    return {} if state is None else {_OPT + k: v for k, v in state.to_arrays().items()}


def opt_from_arrays(arrays: Mapping[str, np.ndarray]) -> OptimizerState | None:
    mine = {k.removeprefix(_OPT): v for k, v in arrays.items() if k.startswith(_OPT)}
    return OptimizerState.from_arrays(mine) if mine else None


class FedAdam(Strategy, messages.AnnouncesRanks, flwr_strategy.FedAdam, name="fedadam"):
    """FedAvg of the replies, then a server Adam step with persistent moments."""

    server_update = staticmethod(fedadam_step)  # FedYogi swaps in its own

    def __init__(self, config: FedOptConfig, **common) -> None:
        super().__init__(config, **common)
        self.opt_state: OptimizerState | None = None

    @staticmethod
    def flower_kwargs(config: FedOptConfig) -> dict[str, float]:
        # Flower's FedOpt validates and keeps these; the step itself is server_update's.
        return {
            "eta": config.server_learning_rate,
            "beta_1": config.server_beta1,
            "beta_2": config.server_beta2,
            "tau": config.server_epsilon,
        }

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Average the replies and take one adaptive step from ``current_arrays``."""
        x = self.current_arrays  # what configure_train sent (Flower's FedOpt keeps it)
        mean = messages.average(by_client(replies), self.rank)
        delta = {key: mean[key].astype(np.float64) - x[key] for key in x}
        c = self.config
        new_x, self.opt_state = self.server_update(
            x,
            delta,
            self.opt_state,
            eta=c.server_learning_rate,
            beta1=c.server_beta1,
            beta2=c.server_beta2,
            tau=c.server_epsilon,
        )
        return to_record(new_x), None

    def state_arrays(self) -> dict[str, np.ndarray]:
        return opt_arrays(self.opt_state)

    def load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.opt_state = opt_from_arrays(arrays)
