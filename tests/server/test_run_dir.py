"""Run directories: no silent overwrite, atomic checkpoints, metrics truncated on resume."""

from __future__ import annotations

import os

import numpy as np
import pytest

from runconfig import parse_run_config
from server import run_dir as rundir
from tests.conftest import pyproject_defaults


def _cfg(tmp_path, **extra):
    return parse_run_config(
        {**pyproject_defaults(), "output-dir": str(tmp_path), "run-name": "r", **extra}
    )


def test_existing_run_is_not_overwritten_without_resume(tmp_path):
    run_dir = rundir.prepare(_cfg(tmp_path))
    rundir.append_metrics(run_dir, {"round": 1})
    with pytest.raises(FileExistsError, match="resume=true"):
        rundir.prepare(_cfg(tmp_path))
    assert rundir.prepare(_cfg(tmp_path, resume=True)) == run_dir


def _ckpt(server_round: int) -> rundir.Checkpoint:
    return rundir.Checkpoint(
        server_round,
        {"a.lora_A.weight": np.full((2, 3), server_round, np.float32)},
        {"m/x": np.zeros(2)},
        {"strategy": "fedavg"},
    )


def test_checkpoint_round_trip_and_replace(tmp_path):
    rundir.save_checkpoint(tmp_path, _ckpt(1))
    rundir.save_checkpoint(tmp_path, _ckpt(2))
    loaded = rundir.load_checkpoint(tmp_path)
    assert loaded.server_round == 2 and loaded.meta == {"strategy": "fedavg"}
    assert (loaded.arrays["a.lora_A.weight"] == 2).all()
    # The replaced checkpoint is kept as the fallback, and nothing else is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".checkpoint-old", "checkpoint"]
    assert (
        rundir.load_file(tmp_path / ".checkpoint-old" / "arrays.safetensors")["a.lora_A.weight"]
        == 1
    ).all()


def test_checkpoint_killed_between_renames_falls_back_to_previous(tmp_path):
    rundir.save_checkpoint(tmp_path, _ckpt(1))
    os.replace(tmp_path / "checkpoint", tmp_path / ".checkpoint-old")  # as if killed there
    assert rundir.load_checkpoint(tmp_path).server_round == 1


def test_truncate_metrics_drops_rounds_after_the_checkpoint(tmp_path):
    for r in (1, 2, 3):
        rundir.append_metrics(tmp_path, {"round": r})
    rundir.truncate_metrics(tmp_path, 2)
    assert [m["round"] for m in rundir.read_metrics(tmp_path)] == [1, 2]
