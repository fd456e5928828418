"""The strategy registry: each name is spelled once, here.

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
from strategies.fedavg import FedAvg, FedAvgConfig


@dataclass(frozen=True)
class StrategyEntry:
    cls: type
    config: type


STRATEGIES: dict[str, StrategyEntry] = {
    "fedavg": StrategyEntry(FedAvg, FedAvgConfig),
}


def _own_params(entry: StrategyEntry, params: dict[str, Any]) -> dict[str, Any]:
    """Keep the keys this strategy reads; keys of other strategies are allowed defaults."""
    own = {f.name.replace("_", "-") for f in dataclasses.fields(entry.config)}
    known = {f.name.replace("_", "-") for e in STRATEGIES.values()
             for f in dataclasses.fields(e.config)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"unknown config key 'strategy.{unknown[0]}'")
    return {k: v for k, v in params.items() if k in own}


def build_strategy(cfg: RunConfig):
    settings = cfg.strategy
    if settings.name not in STRATEGIES:
        raise ConfigError(f"strategy.name = {settings.name!r}: unknown strategy; valid: "
                          f"{', '.join(sorted(STRATEGIES))}")
    entry = STRATEGIES[settings.name]
    config = build_section(entry.config, "strategy", _own_params(entry, dict(settings.params)))
    return entry.cls(
        config,
        fraction_train=settings.fraction_train,
        min_train_nodes=settings.min_train_nodes,
        min_available_nodes=settings.min_available_nodes,
        min_evaluate_nodes=settings.min_train_nodes,
    )
