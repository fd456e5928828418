"""FedProx on the shared LoRA factors (Li et al. 2020, https://arxiv.org/abs/1812.06127).

The server step is FedAvg's. Flower's ``FedProx.configure_train`` puts ``proximal-mu`` into the
train ConfigRecord, and the client adds (mu / 2) * ||theta - theta_global||^2 over the shared
factors it trains to its loss (``client.train.train(proximal=...)``), which limits client
drift on heterogeneous tasks. Heterogeneous ranks work as in ``fedavg``.
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.serverapp import strategy as flwr_strategy

from runconfig.fields import option, require
from strategies import messages
from strategies.fedavg import FedAvg


@dataclass(frozen=True)
class FedProxConfig:
    proximal_mu: float = option(0.01, "FedProx mu: weight of the proximal term in the loss.")
    client_ranks: str = option("", messages.RANKS_HELP)

    def __post_init__(self) -> None:
        require(self.proximal_mu >= 0, "strategy", "proximal_mu", self.proximal_mu, "must be >= 0")
        messages.parse_ranks("client_ranks", self.client_ranks)


class FedProx(FedAvg, flwr_strategy.FedProx, name="fedprox"):
    """FedAvg's server step; the proximal term is applied in each client's loss."""

    @staticmethod
    def flower_kwargs(config: FedProxConfig) -> dict[str, float]:
        return {"proximal_mu": config.proximal_mu}
