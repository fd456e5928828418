"""The skeleton every fedcolora strategy shares: the defaults of :mod:`strategies.protocol`.

:class:`Strategy` is mixed in before a ``flwr.serverapp.strategy`` class (FedAvg, FedProx or
FedAdam), so Flower keeps the sampling of ``configure_train``/``configure_evaluate`` and a
strategy overrides only what it does differently. By default a strategy keeps no state between
rounds (nothing to checkpoint), adds nothing to the round record, and leaves evaluate replies
to ``server.reports``, which records the per-task eval metrics itself. Flower's own
``aggregate_evaluate`` would fail here: it checks that every reply has the same metric keys,
and clients report ``eval-loss.<task>`` for their own tasks only.

The round loop (``server.federation``) aggregates only when at least :attr:`Strategy.min_replies`
usable replies arrived, so no strategy checks the count itself (issue 15).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flwr_strategy

from colora.wire import to_numpy, to_record
from strategies import messages
from strategies.ordering import by_client


class Strategy:
    """Defaults of a fedcolora strategy; put it first among the bases. A strategy class names
    itself in its header: ``class Flora(MergesTerm, name="flora", individual_updates=...)``."""

    name: str = ""
    # "" when the weighted mean of the clients' updates is all the strategy needs, so it can
    # run under secure aggregation; otherwise the reason it needs each update in the clear.
    individual_updates: str = ""

    def __init_subclass__(
        cls, *, name: str | None = None, individual_updates: str | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.name = name
        if individual_updates is not None:
            cls.individual_updates = individual_updates

    def __init__(self, config: Any, **common: Any) -> None:
        super().__init__(**self.flower_kwargs(config), **common)
        self.config = config

    @staticmethod
    def flower_kwargs(config: Any) -> dict[str, Any]:
        """Keyword arguments of the Flower parent class beyond the common ``strategy.*`` ones."""
        del config
        return {}

    @property
    def min_replies(self) -> int:
        """The fewest usable train replies a round aggregates (``strategy.min-train-nodes``)."""
        return self.min_train_nodes

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> None:
        del server_round, replies

    def attach(self, directory: Path, timeout: float | None) -> None:
        """Called by the server loop once, before any round: where per-client state that
        outgrows memory may live (the run directory's ``strategy-state/``), and how long a
        message the strategy sends itself may wait for its replies (``run.round-timeout``).
        A strategy that needs neither ignores them."""
        del directory, timeout

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        del arrays

    def round_log(self, server_round: int) -> dict:
        del server_round
        return {}


def in_the_clear(what: str) -> str:
    """``individual_updates`` of a strategy that reads each update: ``what`` it does with them."""
    return f"{what}, so the server needs each update in the clear."


@dataclass(frozen=True)
class NoOptions:
    """The config of a strategy with no parameters beyond the common ``strategy.*`` keys."""


class SendsFactors(Strategy, flwr_strategy.FedAvg):
    """Sends only the LoRA factors in :attr:`sent` and averages them back into the full
    adapter it keeps; FFA-LoRA sends B, FedSA-LoRA sends A. Averaging one factor is exact when
    the other is shared (FFA-LoRA) or private (FedSA-LoRA), and the global arrays keep both."""

    sent: tuple[str, ...] = ()
    train_keys: Mapping[str, str] = MappingProxyType({})  # config keys of the train messages
    evaluate_keys: Mapping[str, str] = MappingProxyType({})  # ... of the evaluate messages

    def __init__(self, config: Any, **common: Any) -> None:
        super().__init__(config, **common)
        self.full: ArrayRecord | None = None  # the global (A, B) this round started from

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.full = arrays
        config.update(self.train_keys)
        sent = messages.select_factors(arrays, self.sent)
        return super().configure_train(server_round, sent, config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config.update(self.evaluate_keys)
        sent = messages.select_factors(arrays, self.sent)
        return super().configure_evaluate(server_round, sent, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self.full is None:
            return None, None
        return to_record({**to_numpy(self.full), **messages.average(by_client(replies))}), None
