"""A server killed mid-run resumes from its last checkpoint and ends where an uninterrupted
run ends: same seed, no client sampling, so the final shared adapter must match.

The killed run is a subprocess (server, simulation engine and Ray workers in one process
group) that gets SIGKILL once round 1 is in metrics.jsonl; ``resume=true`` then finishes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from server.run_dir import read_metrics
from tests.e2e import ONE_WORKER

pytestmark = pytest.mark.slow

ROUNDS = 3


def _overrides(out: Path, name: str, data_root: Path, **extra) -> dict:
    return {
        "model.source": "tiny",
        "output-dir": str(out),
        "run-name": name,
        "num-server-rounds": ROUNDS,
        "data.root": str(data_root),
        "train.max-train-examples": 8,
        "train.eval-examples": 2,
        "train.max-seq-length": 128,
        "train.batch-size": 2,
        "train.sigma-steps": 1,
        "train.shared-steps": 2,
        "train.learning-rate": 0.01,
        **extra,
    }


def _launch(overrides: dict) -> subprocess.Popen:
    code = (
        "import json, sys; from simulations.engine import simulate; "
        "simulate(json.loads(sys.argv[1]), num_supernodes=3, ray_init_args=json.loads(sys.argv[2]))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(overrides), json.dumps(ONE_WORKER)],
        cwd=Path(__file__).resolve().parents[2],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _finish(proc: subprocess.Popen, timeout: float = 600) -> None:
    try:
        assert proc.wait(timeout=timeout) == 0
    finally:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _final_adapter(run_dir: Path) -> dict:
    return load_file(run_dir / "shared_adapter" / "adapter_model.safetensors")


@pytest.mark.parametrize("strategy", ["fedavg", "similarity-weighted"])
def test_killed_server_resumes_to_the_same_final_adapter(tmp_path, data_root, strategy):
    """similarity-weighted also checks that the resumed server finds which client each new
    node id hosts (the ``query.identify`` round trip through the simulation engine) and sends
    each its own mixture: every client's received-adapter fingerprint matches."""
    chosen = {"strategy.name": strategy}
    _finish(_launch(_overrides(tmp_path, "straight", data_root, **chosen)))
    killed = _launch(_overrides(tmp_path, "killed", data_root, **chosen))
    run_dir = tmp_path / "killed"
    deadline = time.time() + 600
    try:
        while len(read_metrics(run_dir)) < 1:
            assert killed.poll() is None, "run ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.5)
    finally:
        _kill_group(killed)
    done = len(read_metrics(run_dir))
    assert 1 <= done < ROUNDS and not (run_dir / "shared_adapter").exists()

    _finish(_launch(_overrides(tmp_path, "killed", data_root, resume=True, **chosen)))

    resumed, straight = read_metrics(run_dir), read_metrics(tmp_path / "straight")
    assert [r["round"] for r in resumed] == list(range(1, ROUNDS + 1))
    # The round after the checkpoint starts from exactly the uninterrupted run's weights.
    after = done + 1
    assert {e["shared-in-fingerprint"] for e in resumed[after - 1]["train"]} == {
        e["shared-in-fingerprint"] for e in straight[after - 1]["train"]
    }
    expected, got = _final_adapter(tmp_path / "straight"), _final_adapter(run_dir)
    assert expected.keys() == got.keys()
    for key in expected:
        assert (expected[key] - got[key]).abs().max() == 0, key
