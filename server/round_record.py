"""The round record of ``metrics.jsonl``: one typed :class:`RoundRecord`, one JSON line a round.

``server.reports`` builds the records and ``server.federation`` writes them; :mod:`server.
tensorboard`, the experiment harness (``simulations``) and the reports read them back with the
functions here, so the server does not depend on the harness (issue 15). Record keys are
snake_case; the entries of ``train`` and ``eval`` are client metrics, named by
``colora.contract``. What a strategy logs (``round_log``) sits under ``strategy``, so it can
never overwrite a key of the loop's own.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colora.contract import EVAL_METRIC, weighted_mean

FAILED_KEYS = ("round", "failed", "reason", "seconds", "rejected")  # all a failed round has


@dataclass(frozen=True, kw_only=True)
class RoundRecord:
    """One round of the run: what the loop measured, and the strategy's own log."""

    round: int
    seconds: float
    failed: bool = False
    reason: str = ""  # why a failed round could not aggregate
    bytes_down: int = 0
    bytes_up: int = 0
    train: list[dict[str, Any]] = field(default_factory=list)  # screened train metrics
    eval: list[dict[str, Any]] = field(default_factory=list)  # screened evaluate metrics
    train_loss_by_task: dict[str, float] = field(default_factory=dict)
    eval_loss_by_task: dict[str, float] = field(default_factory=dict)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # node_id, reason
    privacy: dict[str, float] | None = None  # local DP spent, when clients report it
    central_dp: dict[str, Any] | None = None  # the noise released this round (central DP)
    strategy: dict[str, Any] = field(default_factory=dict)  # the strategy's round_log

    def to_json(self) -> dict[str, Any]:
        """The ``metrics.jsonl`` line: absent entries are left out, and a failed round has
        :data:`FAILED_KEYS` only."""
        line = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        if self.failed:
            return {k: line[k] for k in FAILED_KEYS}
        del line["failed"], line["reason"]
        return line


def strategy_log(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """The strategy's entries of a ``metrics.jsonl`` line (empty for a failed round)."""
    return record.get("strategy") or {}


def read_records(path: Path) -> list[dict[str, Any]]:
    """Complete JSON lines of a ``metrics.jsonl`` (stops at a line still being written)."""
    if not Path(path).exists():
        return []
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def eval_metrics_by_task(record: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``{task: {metric: mean over clients}}`` of the ``eval.<task>.<metric>`` entries."""
    entries = record.get("eval", [])
    keys = sorted(
        {k for e in entries for k in e if k.startswith(EVAL_METRIC) and k.count(".") >= 2}
    )
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for key in keys:
        _, task, metric = key.split(".", 2)
        out[task][metric] = weighted_mean(entries, key, task)
    return dict(out)
