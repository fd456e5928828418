"""A hand-written experiment directory: 2 strategies x 2 seeds, values chosen to check by hand.

Strategy ``fedavg`` and ``clustered`` (a similarity-aware run that logs ``similarity`` and
``clusters``), seeds 0 and 1, 2 rounds each, tasks generation and translation, 3 clients.
``clustered-seed1`` fails its round 2, so its final values come from round 1. The experiment
file also plans strategy ``never`` that has no run directory. Expected values are in
``EXPECTED`` and derived in comments next to the data.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

EXPERIMENT_TOML = """
[experiment]
name = "fake"
seeds = [0, 1]
num-clients = 3
[base]
"model.source" = "tiny"
"num-server-rounds" = 2
[[strategies]]
label = "fedavg"
"adapter.personal" = "none"
[[strategies]]
label = "clustered"
[[strategies]]
label = "never"
"""
CHROMIUM = Path("/usr/bin/chromium")
GIB = 1024**3


def _eval_entries(gen_loss: float, pass1: tuple[float, float]) -> list[dict]:
    # clients 0 and 2 hold generation (4 examples each), client 1 translation
    return [
        {"client-id": 0, "num-examples": 4, "eval-loss.generation": gen_loss,
         "eval.generation.pass@1": pass1[0]},
        {"client-id": 1, "num-examples": 4, "eval-loss.translation": 3.0},
        {"client-id": 2, "num-examples": 4, "eval-loss.generation": gen_loss,
         "eval.generation.pass@1": pass1[1]},
    ]  # fmt: skip


def _record(rnd: int, gen_loss: float, pass1: tuple[float, float], strategy: dict) -> dict:
    return {
        "round": rnd,
        "seconds": 10.0,
        "bytes_down": 3_000_000,
        "bytes_up": 1_000_000,
        "train": [{"client-id": c, "train-loss": 2.0, "num-examples": 4} for c in range(3)],
        "eval": _eval_entries(gen_loss, pass1),
        "train_loss_by_task": {"generation": 2.0 + rnd, "translation": 2.5},
        "eval_loss_by_task": {"generation": gen_loss, "translation": 3.0},
        "rejected": [],
        "strategy": strategy,
    }


def _similarity(rnd: int) -> dict:
    return {
        "similarity": {"clients": ["0", "1", "2"],
                       "matrix": [[1.0, 0.1, 0.9], [0.1, 1.0, 0.2], [0.9, 0.2, 1.0]]},
        "clusters": {"0": 0, "1": 1, "2": 0} if rnd > 1 else {"0": 0, "1": 0, "2": 0},
        "cluster_sizes": {"0": 2, "1": 1},
    }  # fmt: skip


# (label, seed) -> (final generation eval loss, pass@1 of clients 0 and 2, wall s, peak GiB)
RUNS = {
    ("fedavg", 0): (1.0, (0.25, 0.75), 100.0, 2.0),  # pass@1 = 0.5
    ("fedavg", 1): (2.0, (0.25, 0.35), 120.0, 4.0),  # pass@1 = 0.3
    ("clustered", 0): (0.5, (1.0, 1.0), 200.0, 3.0),
    ("clustered", 1): (0.7, (0.0, 0.0), 300.0, 3.0),  # round 2 failed; final = round 1
}
EXPECTED = {
    # fedavg: mean(1, 2) = 1.5; sample std = sqrt((0.5^2 + 0.5^2) / 1) = 0.7071
    "fedavg generation eval-loss": "1.5000 ± 0.7071",
    # fedavg pass@1: mean(0.5, 0.3) = 0.4; std = sqrt(2 * 0.1^2) = 0.1414
    "fedavg generation pass@1": "0.4000 ± 0.1414",
    # clustered: seed 0 round 2 = 0.5; seed 1 round 1 = 0.7 + 1 = 1.7 (round 1 is 1 higher)
    # mean 1.1; std = sqrt(2 * 0.6^2) = 0.8485
    "clustered generation eval-loss": "1.1000 ± 0.8485",
    # bytes: fedavg 2 rounds x 4 MB = 8 MB each seed
    "fedavg bytes": "8.00 ± 0.00",
    # clustered: seed 0 = 8 MB, seed 1 = 4 MB (failed round sends nothing counted): 6 ± 2.8284
    "clustered bytes": "6.00 ± 2.83",
    "fedavg wall": "110.0 ± 14.1",  # mean(100, 120), std = sqrt(2 * 10^2) = 14.14
    "fedavg peak": "3.00 ± 1.41",  # mean(2, 4) GiB, std = sqrt(2) = 1.414
}


def _write_run(runs_dir: Path, label: str, seed: int) -> None:
    gen_loss, pass1, wall, peak = RUNS[(label, seed)]
    run_dir = runs_dir / f"{label}-seed{seed}"
    run_dir.mkdir(parents=True)
    extra = _similarity if label == "clustered" else (lambda rnd: {})
    records = [
        _record(1, gen_loss + 1.0, pass1, extra(1)),
        _record(2, gen_loss, pass1, extra(2)),
    ]
    if (label, seed) == ("clustered", 1):
        records[0] = _record(1, gen_loss + 1.0, pass1, extra(1))
        records[1] = {"round": 2, "failed": True, "reason": "too few replies", "seconds": 1.0,
                      "rejected": []}  # fmt: skip
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (run_dir / "metrics.jsonl").write_text(lines)
    (run_dir / "config.json").write_text(json.dumps({"num-server-rounds": 2}))
    summary = {"status": "completed", "wall_seconds": wall, "peak_rss_bytes": peak * GIB,
               "peak_pss_bytes": peak * GIB / 2, "rounds": [], "attempts": []}  # fmt: skip
    (run_dir / "run_summary.json").write_text(json.dumps(summary))


def build_fake_experiment(root: Path) -> Path:
    exp_dir = root / "fake"
    if exp_dir.exists():
        shutil.rmtree(exp_dir)
    (exp_dir / "runs").mkdir(parents=True)
    (exp_dir / "experiment.toml").write_text(EXPERIMENT_TOML)
    for label, seed in RUNS:
        _write_run(exp_dir / "runs", label, seed)
    return exp_dir
