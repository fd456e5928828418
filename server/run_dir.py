"""The run directory: resolved config, per-round metrics, checkpoints and final adapters.

Layout::

    <output-dir>/<run-name>/
        config.json              resolved run config (flat TOML keys)
        metrics.jsonl            one JSON line per completed round
        checkpoint/              last completed round: shared arrays + strategy state
        shared_adapter/          final shared LoRA adapter (PEFT directory)
        clients/client-<id>/     simulation only: each client's private state and export

Checkpoints are written to a temporary directory and renamed, so a server killed at any
moment leaves the previous round's checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from runconfig.schema import RunConfig

CHECKPOINT = "checkpoint"


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
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(run_dir: Path, last_round: int) -> None:
    """Drop lines of rounds after the checkpoint (they are recomputed on resume)."""
    kept = [r for r in read_metrics(run_dir) if r["round"] <= last_round]
    tmp = run_dir / ".metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
    os.replace(tmp, run_dir / "metrics.jsonl")


def save_checkpoint(run_dir: Path, ckpt: Checkpoint) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=run_dir))
    arrays = {k: np.ascontiguousarray(v) for k, v in ckpt.arrays.items()}
    save_file(arrays, tmp / "arrays.safetensors")
    state = {k: np.ascontiguousarray(v) for k, v in ckpt.strategy_state.items()}
    save_file(state, tmp / "strategy.safetensors")
    (tmp / "meta.json").write_text(json.dumps({"round": ckpt.server_round, **ckpt.meta}))
    target, old = run_dir / CHECKPOINT, run_dir / f".{CHECKPOINT}-old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    target = run_dir / CHECKPOINT
    if not (target / "meta.json").exists():
        old = run_dir / f".{CHECKPOINT}-old"  # killed between the two renames
        target = old if (old / "meta.json").exists() else None
    if target is None:
        return None
    meta = json.loads((target / "meta.json").read_text())
    return Checkpoint(
        server_round=int(meta.pop("round")),
        arrays=load_file(target / "arrays.safetensors"),
        strategy_state=load_file(target / "strategy.safetensors"),
        meta=meta,
    )
