"""FedAdam on the shared LoRA factors (Reddi et al. 2021, https://arxiv.org/abs/2003.00295).

The server averages the clients' factors (FedAvg weights, zero-padding heterogeneous ranks),
treats Delta = mean - x as a negative pseudo-gradient and takes one Adam step on the global
adapter. The step is ``strategies.maths.server_opt.fedadam_step`` (Algorithm 2 of the paper, no
bias correction, v starts at tau^2), not Flower's own, whose v starts at 0. The moments m and v
are strategy state, so they survive a server restart. ``fedyogi`` subclasses this strategy
and swaps in its own step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp import strategy as flwr_strategy

from colora.wire import to_record
from runconfig.fields import option, require
from strategies import messages, protocol
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

    def flower_kwargs(self) -> dict[str, float]:
        return {
            "eta": self.server_learning_rate,
            "beta_1": self.server_beta1,
            "beta_2": self.server_beta2,
            "tau": self.server_epsilon,
        }


def server_step(strategy, replies: Iterable[Message], step: Callable) -> ArrayRecord | None:
    """Average the replies and take one adaptive step from ``strategy.current_arrays``."""
    replies = by_client(replies)
    if len(replies) < strategy.min_train_nodes:
        return None
    x = strategy.current_arrays  # what configure_train sent (Flower's FedOpt keeps it)
    mean = messages.average(replies, strategy.rank)
    delta = {key: mean[key].astype(np.float64) - x[key] for key in x}
    c = strategy.config
    new_x, strategy.opt_state = step(
        x,
        delta,
        strategy.opt_state,
        eta=c.server_learning_rate,
        beta1=c.server_beta1,
        beta2=c.server_beta2,
        tau=c.server_epsilon,
    )
    return to_record(new_x)


def opt_arrays(state: OptimizerState | None) -> dict[str, np.ndarray]:
    return {} if state is None else {_OPT + k: v for k, v in state.to_arrays().items()}


def opt_from_arrays(arrays: Mapping[str, np.ndarray]) -> OptimizerState | None:
    mine = {k.removeprefix(_OPT): v for k, v in arrays.items() if k.startswith(_OPT)}
    return OptimizerState.from_arrays(mine) if mine else None


class FedAdam(messages.AnnouncesRanks, flwr_strategy.FedAdam):
    """FedAvg of the replies, then a server Adam step with persistent moments."""

    name = "fedadam"
    individual_updates = ""  # the weighted mean of the updates is enough (SecAgg+ ok)
    aggregate_evaluate = protocol.skip_evaluate
    round_log = protocol.empty_log

    def __init__(self, config: FedOptConfig, **common) -> None:
        super().__init__(**config.flower_kwargs(), **common)
        self.config = config
        self.opt_state: OptimizerState | None = None

    server_update = staticmethod(fedadam_step)  # FedYogi swaps in its own

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return server_step(self, replies, self.server_update), None

    def state_arrays(self) -> dict[str, np.ndarray]:
        return opt_arrays(self.opt_state)

    def load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.opt_state = opt_from_arrays(arrays)
