"""Read an experiment directory back: its runs, their round records, and seed statistics.

A run directory ``runs/<label>-seed<seed>/`` holds ``metrics.jsonl`` (one line per round,
written by ``server.reports``), ``config.json`` and, when the experiment runner ran it,
``run_summary.json`` (wall time, peak memory). A metric is named ``(metric, task)``:
``("eval-loss", task)`` and ``("train-loss", task)`` from the server's per-task means, and
``(name, task)`` for every ``eval.<task>.<name>`` a client reports (pass@1, BLEU, ...),
averaged over clients weighted by examples as the server does for losses.
"""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codetasks.data.jsonl import read_json_object
from colora.contract import EVAL_LOSS, TRAIN_LOSS
from server.round_record import eval_metrics_by_task, read_records

SUMMARY_FILE = "run_summary.json"
_RUN_NAME = re.compile(r"^(?P<label>.+)-seed(?P<seed>\d+)$")
Metric = tuple[str, str]  # (metric name, task)
log = logging.getLogger(__name__)


def record_metrics(record: Mapping[str, Any]) -> dict[Metric, float]:
    """Every per-task metric of one (non-failed) round line."""
    values = {(EVAL_LOSS, t): v for t, v in record.get("eval_loss_by_task", {}).items()}
    values |= {(TRAIN_LOSS, t): v for t, v in record.get("train_loss_by_task", {}).items()}
    for task, metrics in eval_metrics_by_task(record).items():
        values |= {(m, task): v for m, v in metrics.items()}
    return values


@dataclass
class RunResult:
    """One (strategy label, seed) run as found on disk."""

    label: str
    seed: int
    run_dir: Path
    records: list[dict[str, Any]]
    num_rounds: int | None  # configured rounds, from config.json
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok_records(self) -> list[dict[str, Any]]:
        return [r for r in self.records if not r.get("failed")]

    @property
    def failed_rounds(self) -> list[int]:
        return [r["round"] for r in self.records if r.get("failed")]

    @property
    def rounds_done(self) -> int:
        return max((r["round"] for r in self.records), default=0)

    @property
    def complete(self) -> bool:
        return self.num_rounds is not None and self.rounds_done >= self.num_rounds

    def final_metrics(self) -> dict[Metric, float]:
        """Metrics of the last round that did not fail (eval-only metrics included)."""
        ok = self.ok_records
        return record_metrics(ok[-1]) if ok else {}

    def total_bytes(self) -> int:
        return sum(r.get("bytes_down", 0) + r.get("bytes_up", 0) for r in self.records)

    def summary_value(self, key: str) -> float | None:
        """A finite number of ``run_summary.json``; None if absent or not one (n/a)."""
        return finite_float(self.summary.get(key))

    @property
    def status(self) -> str:
        """The runner's status of the run, else what its rounds say."""
        status = self.summary.get("status")
        if isinstance(status, str) and status:
            return status
        return "complete" if self.complete else "partial"


def json_float(value: Any) -> float | None:
    """A JSON number (an int or float, not a bool) as a float, NaN and Infinity included;
    None for anything else, or an int beyond any float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def finite_float(value: Any) -> float | None:
    """:func:`json_float`, and None for NaN and the infinities too."""
    number = json_float(value)
    return number if number is not None and math.isfinite(number) else None


def read_json_or_empty(path: Path) -> dict[str, Any]:
    """A JSON object file of a run directory; {} if it is absent, unreadable, not JSON or
    not an object, which the report shows as missing data ("n/a") rather than stopping on."""
    if not path.exists():
        return {}
    try:
        return read_json_object(path)
    except (OSError, ValueError) as error:  # DataError is a ValueError and names the file
        log.warning("%s; treated as missing", error)
        return {}


def _configured_rounds(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def load_run(run_dir: Path) -> RunResult | None:
    """The run in ``run_dir``, or None if the name is not ``<label>-seed<seed>``."""
    match = _RUN_NAME.match(run_dir.name)
    if match is None:
        return None
    rounds = read_json_or_empty(run_dir / "config.json").get("num-server-rounds")
    return RunResult(
        label=match["label"],
        seed=int(match["seed"]),
        run_dir=run_dir,
        records=read_records(run_dir / "metrics.jsonl"),
        num_rounds=rounds if _configured_rounds(rounds) else None,
        summary=read_json_or_empty(run_dir / SUMMARY_FILE),
    )


def load_runs(exp_dir: Path) -> list[RunResult]:
    """Every run under ``<exp_dir>/runs``, sorted by label then seed."""
    runs_dir = Path(exp_dir) / "runs"
    dirs = sorted(d for d in runs_dir.iterdir() if d.is_dir()) if runs_dir.is_dir() else []
    found = [load_run(d) for d in dirs]
    return sorted((r for r in found if r is not None), key=lambda r: (r.label, r.seed))


def group_by_label(
    runs: Iterable[RunResult], order: Sequence[str] = ()
) -> dict[str, list[RunResult]]:
    """Runs per strategy label: labels in ``order`` first (the experiment file's), then the rest."""
    groups: dict[str, list[RunResult]] = {label: [] for label in order}
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    return {label: group for label, group in groups.items() if group}


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); the std is None for fewer than 2 values."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def series(runs: Sequence[RunResult], metric: Metric) -> tuple[list[int], list[float], list[float]]:
    """Per round: mean and std (0 with one seed) of ``metric`` over the runs that have it."""
    by_round: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for record in run.ok_records:
            value = record_metrics(record).get(metric)
            if value is not None and not math.isnan(value):
                by_round[record["round"]].append(value)
    rounds = sorted(by_round)
    stats = [mean_std(by_round[r]) for r in rounds]
    return rounds, [m for m, _ in stats], [s or 0.0 for _, s in stats]


def metrics_of(runs: Iterable[RunResult]) -> list[Metric]:
    """Every metric any round of any run reports: eval loss, train loss, then the rest."""
    found = {m for run in runs for record in run.ok_records for m in record_metrics(record)}
    rank = {EVAL_LOSS: 0, TRAIN_LOSS: 1}
    return sorted(found, key=lambda m: (rank.get(m[0], 2), m[0], m[1]))
