"""The strategy registry: each name is spelled once, as its class's ``name``.

``build_strategy(cfg)`` looks the name up, checks the ``strategy.*`` keys against the
strategy's own config dataclass, and returns the strategy object. An unknown name fails
with the list of valid names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from runconfig.fields import ConfigError, build_section
from runconfig.schema import RunConfig
from strategies.base import NoOptions
from strategies.centralized import Centralized
from strategies.clustered import Clustered, ClusteredConfig
from strategies.coba import Coba, CobaConfig
from strategies.fedadam import FedAdam, FedOptConfig
from strategies.fedavg import FedAvg, FedAvgConfig
from strategies.fedex_lora import FedExLora
from strategies.fedprox import FedProx, FedProxConfig
from strategies.fedsa_lora import FedSaLora
from strategies.fedyogi import FedYogi
from strategies.ffa_lora import FfaLora
from strategies.flora import Flora, FloraConfig
from strategies.local_only import LocalOnly
from strategies.protocol import FederatedStrategy
from strategies.robust_fedavg import RobustFedAvg, RobustFedAvgConfig
from strategies.similarity_weighted import SimilarityWeighted, SimilarityWeightedConfig


@dataclass(frozen=True)
class StrategyEntry:
    cls: type
    config: type


def _by_name(*entries: StrategyEntry) -> dict[str, StrategyEntry]:
    """Key each entry by its class's ``name`` (spelled there only); duplicates are an error."""
    registry: dict[str, StrategyEntry] = {}
    for entry in entries:
        if entry.cls.name in registry:
            raise ValueError(f"strategy name {entry.cls.name!r} is registered twice")
        registry[entry.cls.name] = entry
    return registry


# Task-similarity-aware strategies first, then the baselines of docs/ALGORITHMS.md.
STRATEGIES: dict[str, StrategyEntry] = _by_name(
    StrategyEntry(SimilarityWeighted, SimilarityWeightedConfig),
    StrategyEntry(Clustered, ClusteredConfig),
    StrategyEntry(Coba, CobaConfig),
    StrategyEntry(FedAvg, FedAvgConfig),
    StrategyEntry(RobustFedAvg, RobustFedAvgConfig),
    StrategyEntry(FedProx, FedProxConfig),
    StrategyEntry(FedAdam, FedOptConfig),
    StrategyEntry(FedYogi, FedOptConfig),
    StrategyEntry(FfaLora, NoOptions),
    StrategyEntry(FedSaLora, NoOptions),
    StrategyEntry(Flora, FloraConfig),
    StrategyEntry(FedExLora, NoOptions),
    StrategyEntry(LocalOnly, NoOptions),
    StrategyEntry(Centralized, NoOptions),
)


def _own_params(entry: StrategyEntry, params: dict[str, Any]) -> dict[str, Any]:
    """Keep the keys this strategy reads; keys of other strategies are allowed defaults."""
    own = {f.name.replace("_", "-") for f in dataclasses.fields(entry.config)}
    known = {
        f.name.replace("_", "-") for e in STRATEGIES.values() for f in dataclasses.fields(e.config)
    }
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"unknown config key 'strategy.{unknown[0]}'")
    return {k: v for k, v in params.items() if k in own}


def _check_secure_aggregation(entry: StrategyEntry, config: Any) -> None:
    """SecAgg+ shows the server only the weighted sum of equally shaped updates."""
    reason = entry.cls.individual_updates
    if reason:
        allowed = ", ".join(n for n, e in STRATEGIES.items() if not e.cls.individual_updates)
        raise ConfigError(
            f"privacy.secure-aggregation = true cannot be combined with strategy.name = "
            f"{entry.cls.name!r}: {reason} Strategies that run under secure aggregation: "
            f"{allowed}."
        )
    ranks = getattr(config, "client_ranks", "")
    if ranks:
        raise ConfigError(
            f"privacy.secure-aggregation = true cannot be combined with strategy.client-ranks = "
            f"{ranks!r}: SecAgg+ sums equally shaped uploads, and heterogeneous ranks send "
            "factors of different shapes."
        )


def _check_comm(cfg: RunConfig, config: Any) -> None:
    """Lossy codecs run on plain rounds of equally shaped updates."""
    comm = cfg.comm
    if cfg.privacy.secure_aggregation and not comm.lossless:
        raise ConfigError(
            f"comm.uplink = {comm.uplink!r} / comm.downlink = {comm.downlink!r} cannot be "
            "combined with privacy.secure-aggregation = true: SecAgg+ already quantises the "
            "update to its own field (2^30 levels) and its rounds run Flower's own workflow, "
            "which sends the adapter as it is. Use 'fp32' in both directions."
        )
    ranks = getattr(config, "client_ranks", "")
    if ranks and comm.uplink != "fp32":
        raise ConfigError(
            f"comm.uplink = {comm.uplink!r} cannot be combined with strategy.client-ranks = "
            f"{ranks!r}: a lossy uplink sends the update against what was received, and "
            "HetLoRA replies have fewer ranks than were sent."
        )


def build_strategy(cfg: RunConfig) -> FederatedStrategy:
    """The configured strategy, built with its own checked ``strategy.*`` keys."""
    settings = cfg.strategy
    if settings.name not in STRATEGIES:
        raise ConfigError(
            f"strategy.name = {settings.name!r}: unknown strategy; valid: "
            f"{', '.join(sorted(STRATEGIES))}"
        )
    entry = STRATEGIES[settings.name]
    config = build_section(entry.config, "strategy", _own_params(entry, dict(settings.params)))
    if cfg.privacy.secure_aggregation:
        _check_secure_aggregation(entry, config)
    _check_comm(cfg, config)
    return entry.cls(
        config,
        fraction_train=settings.fraction_train,
        # Evaluate the same fraction that trains: evaluating all of 100 clients while 10 train
        # made evaluation 80% of a round at scale.
        fraction_evaluate=settings.fraction_train,
        min_train_nodes=settings.min_train_nodes,
        min_available_nodes=settings.min_available_nodes,
        min_evaluate_nodes=settings.min_train_nodes,
    )
