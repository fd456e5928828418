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
import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colora.contract import EVAL_METRIC, weighted_mean

FAILED_KEYS = ("round", "failed", "reason", "seconds", "rejected")  # all a failed round has
_INT64 = 2**63  # TensorBoard steps and scalars are int64/float: larger numbers cannot be logged
log = logging.getLogger(__name__)


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


def _number(value: Any) -> bool:
    """An int or float as ``json`` reads it (NaN and Infinity included), not a bool, and
    small enough to become a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, float) or -_INT64 <= value < _INT64


def _numbers(value: Any) -> bool:
    """A JSON object of numbers (per-task losses, a client's metrics, the privacy entries)."""
    return isinstance(value, dict) and all(map(_number, value.values()))


# What each key of a round line must hold when present; readers rely on these shapes.
_SHAPES = {
    "seconds": _number,
    "failed": lambda v: isinstance(v, bool),
    "reason": lambda v: isinstance(v, str),
    "bytes_down": lambda v: _number(v) and not isinstance(v, float) and v >= 0,
    "bytes_up": lambda v: _number(v) and not isinstance(v, float) and v >= 0,
    "train": lambda v: isinstance(v, list) and all(map(_numbers, v)),
    "eval": lambda v: isinstance(v, list) and all(map(_numbers, v)),
    "train_loss_by_task": _numbers,
    "eval_loss_by_task": _numbers,
    "rejected": lambda v: isinstance(v, list),
    "privacy": _numbers,
    "central_dp": _numbers,
    "strategy": lambda v: isinstance(v, dict),
}


def is_round(value: Any) -> bool:
    """A round number as stored: an int >= 0 (below 2**63, a TensorBoard step), not a bool."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _INT64


def record_problem(record: Any) -> str | None:
    """Why a parsed ``metrics.jsonl`` line is not a round record, or None if it is one: a JSON
    object with an int ``round`` >= 0 and, for every key :class:`RoundRecord` writes, a value
    of the type it writes. A strategy's own log (``strategy``) is checked by its readers."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if not is_round(record.get("round")):
        return f"'round' = {record.get('round')!r}: expected an integer >= 0"
    for key, ok in _SHAPES.items():
        if key in record and not ok(record[key]):
            return f"'{key}' has the wrong type"
    return None


def read_records(path: Path, *, warn_torn_tail: bool = False) -> list[dict[str, Any]]:
    """The round records of a ``metrics.jsonl``. A line that is not one (:func:`record_problem`)
    is skipped with a log line; the last line only with ``warn_torn_tail`` (a resume, where a
    kill mid-write left it torn), since a reader that follows a live run sees the line being
    written. An unreadable file reads as no records. A hand-edited or corrupt file thus never
    stops a resume, a report, TensorBoard or the runner's progress."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    except OSError as error:
        log.warning("%s: unreadable (%s); no rounds read", path, error)
        return []
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: [[[[… past the stack
            record = None
        problem = record_problem(record)
        if problem is None:
            records.append(record)
        elif number < len(lines) or warn_torn_tail:
            where = "torn last line" if number == len(lines) else "line"
            log.warning("%s: skipping %s %d (%s): %r", path, where, number, problem, line[:80])
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
