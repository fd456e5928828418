"""TensorBoard event files from ``metrics.jsonl`` records, so ``tensorboard --logdir`` works.

Each round record becomes scalars under ``<run dir>/tensorboard/`` at step = round: per-task
train and eval loss, per-task generation metrics (``eval/<metric>/<task>``), bytes down and up,
round seconds, clients trained and rejected, and the number of clusters when a strategy logs
them. Writing is idempotent: ``tensorboard/written.json`` remembers a digest per round, so the
server (after each round), the experiment runner (while it tails a run) and the report command
(backfilling old runs) can all call :func:`write_round` or :func:`sync_run` without duplicating
points; a round re-run after a resume has a new digest and is written again.

    tensorboard --logdir experiments/<name>/runs
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Imported with the module, never lazily: a first import of tensorboard from the ServerApp's
# thread while the simulation engine's threads import theirs once returned a half-initialised
# module ("TensorBoard logging requires TensorBoard version 1.15 or above") and killed a run.
from torch.utils.tensorboard import SummaryWriter

from codetasks.data.jsonl import read_json_object
from colora.contract import TRAIN_LOSS, weighted_mean
from server.round_record import eval_metrics_by_task, read_records, strategy_log

log = logging.getLogger(__name__)

TB_DIR = "tensorboard"
_WRITTEN = "written.json"


def round_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of one round line, tag -> value."""
    if record.get("failed"):
        return {"round/failed": 1.0, "time/round_seconds": float(record.get("seconds", 0.0))}
    scalars = {f"train/loss/{t}": v for t, v in record.get("train_loss_by_task", {}).items()}
    scalars |= {f"eval/loss/{t}": v for t, v in record.get("eval_loss_by_task", {}).items()}
    for task, metrics in eval_metrics_by_task(record).items():
        scalars |= {f"eval/{m}/{task}": v for m, v in metrics.items()}
    train = record.get("train", [])
    if train:
        scalars["train/loss"] = weighted_mean(train, TRAIN_LOSS)
    scalars |= {
        "round/failed": 0.0,
        "round/clients_trained": float(len(train)),
        "round/rejected": float(len(record.get("rejected", []))),
        "comm/bytes_down": float(record.get("bytes_down", 0)),
        "comm/bytes_up": float(record.get("bytes_up", 0)),
        "time/round_seconds": float(record.get("seconds", 0.0)),
    }
    clusters = strategy_log(record).get("clusters")
    if isinstance(clusters, Mapping):
        scalars["clusters/count"] = float(len(set(clusters.values())))
    return {tag: float(value) for tag, value in scalars.items()}


def _digest(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def _read_written(path: Path) -> dict[str, str]:
    """The round -> digest map; a damaged one reads as empty (logged): the cost is rounds
    written twice to TensorBoard, where a raise would stop the run after every round."""
    if not path.exists():
        return {}
    try:
        written = read_json_object(path)
    except (OSError, ValueError) as error:  # DataError is a ValueError
        reason = str(error)[:200]
    else:
        if all(isinstance(v, str) for v in written.values()):
            return written
        reason = "not a map of round digests"
    log.warning("%s is damaged (%s); rewriting every round's scalars", path, reason)
    return {}


@contextmanager
def _locked(log_dir: Path) -> Iterator[dict[str, str]]:
    """The ``written.json`` map, under an exclusive lock; saved on exit."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        written = _read_written(log_dir / _WRITTEN)
        yield written
        tmp = log_dir / f".{_WRITTEN}.tmp"
        tmp.write_text(json.dumps(written, sort_keys=True))
        tmp.replace(log_dir / _WRITTEN)


def _write(log_dir: Path, records: Sequence[Mapping[str, Any]]) -> int:
    with _locked(log_dir) as written:
        todo = [r for r in records if written.get(str(r["round"])) != _digest(r)]
        if not todo:
            return 0
        writer = SummaryWriter(log_dir=str(log_dir))
        try:
            for record in todo:
                for tag, value in round_scalars(record).items():
                    writer.add_scalar(tag, value, global_step=int(record["round"]))
                written[str(record["round"])] = _digest(record)
        finally:
            writer.close()
        return len(todo)


def write_round(run_dir: Path, record: Mapping[str, Any]) -> bool:
    """Write one round's scalars unless that exact record was written; True if written.

    Call from the server right after ``append_metrics(run_dir, record)``.
    """
    return _write(Path(run_dir) / TB_DIR, [record]) > 0


def sync_run(run_dir: Path) -> int:
    """Write every round of ``metrics.jsonl`` not yet in the event files; returns how many."""
    records = read_records(Path(run_dir) / "metrics.jsonl")
    return _write(Path(run_dir) / TB_DIR, records) if records else 0
