"""FedYogi on the shared LoRA factors (Reddi et al. 2021, https://arxiv.org/abs/2003.00295).

As ``fedadam`` but with Yogi's additive second moment,
v_t = v_{t-1} - (1 - beta2) * Delta^2 * sign(v_{t-1} - Delta^2), which cannot jump up by a factor
as Adam's can (``strategies.maths.server_opt.fedyogi_step``). Keys and state are FedAdam's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flwr_strategy

from strategies import messages, protocol
from strategies.fedadam import FedOptConfig, opt_arrays, opt_from_arrays, server_step
from strategies.maths.server_opt import OptimizerState, fedyogi_step


class FedYogi(flwr_strategy.FedYogi):
    """FedAvg of the replies, then a server Yogi step with persistent moments."""

    name = "fedyogi"
    individual_updates = ""  # the weighted mean of the updates is enough (SecAgg+ ok)
    aggregate_evaluate = protocol.skip_evaluate
    round_log = protocol.empty_log

    def __init__(self, config: FedOptConfig, **common) -> None:
        super().__init__(**config.flower_kwargs(), **common)
        self.config = config
        self.rank: int | None = None
        self.opt_state: OptimizerState | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.rank = messages.announce_ranks(self.config.client_ranks, arrays, config)
        return super().configure_train(server_round, arrays, config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages.announce_ranks(self.config.client_ranks, arrays, config)
        return super().configure_evaluate(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return server_step(self, replies, fedyogi_step), None

    def state_arrays(self) -> dict[str, np.ndarray]:
        return opt_arrays(self.opt_state)

    def load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.opt_state = opt_from_arrays(arrays)
