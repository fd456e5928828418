"""The two protocols a fedcolora strategy speaks: to the round loop, and to the clients.

**To the loop** (``server.federation``): a strategy is a subclass of a ``flwr.serverapp.strategy``
class, so ``configure_train``/``aggregate_train``/``configure_evaluate``/``aggregate_evaluate``
keep Flower's signatures (https://flower.ai/docs/framework/ref-api/flwr.serverapp.strategy.html).
The loop screens replies before ``aggregate_*`` sees them, and additionally calls
``state_arrays``/``load_state`` (checkpoint and resume) and ``round_log`` (merged into the round's
``metrics.jsonl`` line, so it must be JSON-serialisable). :class:`strategies.base.Strategy`
carries the defaults every strategy starts from.

**To the clients**: the config keys and reply metrics live in :mod:`colora.contract`, a layer
below both the strategies and the client (issue 15).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid


class FederatedStrategy(Protocol):
    """What ``server.federation.run_federation`` calls on a strategy."""

    name: str
    # "" when the weighted mean of the clients' updates is all the strategy needs, so it can
    # run under secure aggregation; otherwise the reason it needs each update in the clear.
    individual_updates: str
    # The fewest usable train replies a round aggregates; the loop checks it, not the strategy.
    min_replies: int

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]: ...

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]: ...

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]: ...

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> None: ...

    def attach(self, directory: Path, timeout: float | None) -> None: ...

    def state_arrays(self) -> dict[str, np.ndarray]: ...

    def load_state(self, arrays: Mapping[str, np.ndarray]) -> None: ...

    def round_log(self, server_round: int) -> dict: ...
