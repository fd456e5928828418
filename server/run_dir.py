"""The run directory: resolved config, per-round metrics, checkpoints and final adapters.

Layout::

    <output-dir>/<run-name>/
        config.json              resolved run config (flat TOML keys)
        metrics.jsonl            one JSON line per completed round
        checkpoint/              last completed round: shared arrays + strategy state
        shared_adapter/          final shared LoRA adapter (PEFT directory)
        clients/client-<id>/     simulation only: each client's private state and export

Checkpoints are written to a temporary directory and renamed, so a server killed at any
moment leaves the previous round's checkpoint intact; the one before is kept as
``.checkpoint-old``. On resume a checkpoint is validated as strictly as a client reply
and, if it fails, the previous one is used, with a log line saying why. A torn last line of
``metrics.jsonl`` (a kill mid-write) is skipped and trimmed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from runconfig.schema import RunConfig
from server.round_record import is_round, read_records
from strategies.maths.validation import check_update

CHECKPOINT = "checkpoint"
PREVIOUS = f".{CHECKPOINT}-old"  # the checkpoint before the last one: the fallback
STRATEGY_STATE = "strategy-state"  # per-client strategy state kept on disk (checkpoints name it)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpoint:
    server_round: int
    arrays: dict[str, np.ndarray]
    strategy_state: dict[str, np.ndarray]
    meta: dict[str, Any]


def prepare(cfg: RunConfig) -> Path:
    """Create the run directory; refuse to overwrite a finished or partial run unless resuming."""
    run_dir = cfg.run_dir()
    if run_dir.exists() and (run_dir / "metrics.jsonl").exists() and not cfg.run.resume:
        raise FileExistsError(
            f"run directory {run_dir} already holds a run; set resume=true to continue it "
            "or choose another run-name"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(cfg.to_json() + "\n")
    return run_dir


def append_metrics(run_dir: Path, record: Mapping[str, Any]) -> None:
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The round records of ``metrics.jsonl`` (:func:`server.round_record.read_records`): a
    line that is not a well-formed round record, a torn last line as a kill mid-write leaves
    it included, is skipped with a log line."""
    return read_records(Path(run_dir) / "metrics.jsonl", warn_torn_tail=True)


def truncate_metrics(run_dir: Path, last_round: int) -> None:
    """Drop lines of rounds after the checkpoint (they are recomputed on resume), and any
    torn or corrupt line."""
    kept = [r for r in read_metrics(run_dir) if r["round"] <= last_round]
    tmp = run_dir / ".metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
    os.replace(tmp, run_dir / "metrics.jsonl")


def save_checkpoint(run_dir: Path, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` atomically; the checkpoint it replaces is kept as the fallback."""
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=run_dir))
    arrays = {k: np.ascontiguousarray(v) for k, v in ckpt.arrays.items()}
    save_file(arrays, tmp / "arrays.safetensors")
    state = {k: np.ascontiguousarray(v) for k, v in ckpt.strategy_state.items()}
    save_file(state, tmp / "strategy.safetensors")
    (tmp / "meta.json").write_text(json.dumps({"round": ckpt.server_round, **ckpt.meta}))
    target, old = run_dir / CHECKPOINT, run_dir / PREVIOUS
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)


class CheckpointError(ValueError):
    """A checkpoint directory is unreadable or breaks the run's layout; the message says why."""


def _meta(path: Path, max_round: int | None) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:  # [[[[… overflows the parser
        raise CheckpointError(f"{path}: unreadable or truncated JSON ({error!r:.200})") from None
    if not isinstance(meta, dict) or not is_round(meta.get("round")):
        raise CheckpointError(f"{path}: 'round' must be an integer >= 0")
    if max_round is not None and meta["round"] > max_round:
        raise CheckpointError(f"{path}: round {meta['round']} is beyond the run's {max_round}")
    return meta


def _tensors(path: Path) -> dict[str, np.ndarray]:
    try:
        tensors = load_file(path)
    except Exception as error:  # safetensors raises its own error types on corrupt files
        raise CheckpointError(f"{path}: unreadable safetensors ({error})") from None
    for key, value in tensors.items():
        if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
            raise CheckpointError(f"{path}: '{key}' contains NaN or Inf")
    return tensors


def _read_checkpoint(
    target: Path,
    layout: Mapping[str, np.ndarray] | None,
    max_round: int | None,
    strategy: str | None,
) -> Checkpoint:
    meta = _meta(target / "meta.json", max_round)
    if strategy is not None and meta.get("strategy") != strategy:
        raise CheckpointError(
            f"{target}: written by strategy {meta.get('strategy')!r}, this run uses {strategy!r}"
        )
    arrays = _tensors(target / "arrays.safetensors")
    if layout is not None:
        reason = check_update(arrays, layout)
        if reason is not None:
            raise CheckpointError(f"{target}: arrays do not match the adapter: {reason}")
    return Checkpoint(
        server_round=int(meta.pop("round")),
        arrays=arrays,
        strategy_state=_tensors(target / "strategy.safetensors"),
        meta=meta,
    )


def checkpoint_round(run_dir: Path) -> int | None:
    """The round of the newest checkpoint whose ``meta.json`` is valid (None if none is);
    reads no tensors, for callers that only need to know how far a run got."""
    for target in (run_dir / CHECKPOINT, run_dir / PREVIOUS):
        try:
            return _meta(target / "meta.json", None)["round"]
        except CheckpointError:
            continue
    return None


def _restore(
    restore: Callable[[Mapping[str, np.ndarray]], None], ckpt: Checkpoint, target: Path
) -> None:
    try:
        restore(ckpt.strategy_state)
    except Exception as error:  # a strategy reads its own state; any failure rules it out
        raise CheckpointError(
            f"{target}: the strategy cannot read its state ({type(error).__name__}: {error})"
        ) from None


def load_checkpoint(
    run_dir: Path,
    *,
    layout: Mapping[str, np.ndarray] | None = None,
    max_round: int | None = None,
    strategy: str | None = None,
    restore: Callable[[Mapping[str, np.ndarray]], None] | None = None,
) -> Checkpoint | None:
    """The newest valid checkpoint: ``checkpoint/``, else the previous one, else None.

    Validated as strictly as a client reply: ``meta.json`` must be a JSON object with a round
    in [0, ``max_round``] written by ``strategy``; the arrays must have exactly the keys,
    shapes and dtypes of ``layout`` (the initial adapter) and be finite; the strategy state
    must be finite and, when ``restore`` is given (the strategy's ``load_state``), be read
    by it without an error. A checkpoint that fails is skipped with a log line saying why.
    ``restore`` may have been called with a state that then failed: the caller resets it
    (``load_state({})``).
    """
    for target in (run_dir / CHECKPOINT, run_dir / PREVIOUS):
        if not target.exists():
            continue
        try:
            ckpt = _read_checkpoint(target, layout, max_round, strategy)
            if restore is not None:
                _restore(restore, ckpt, target)
            return ckpt
        except CheckpointError as error:
            log.error("Ignoring checkpoint %s: %s; falling back to the previous one", target, error)
    return None
