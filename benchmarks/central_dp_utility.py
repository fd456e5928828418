"""Utility of central DP under SecAgg+ on the bundled model, against the same run without DP.

Runs fedavg under SecAgg+ on SmolLM2-135M (NF4), 3 clients (one task each), in Flower's
simulation engine: once without DP, then with ``privacy.dp-mode = "central"`` at a target ε
over the whole run for each clip norm given. Prints the held-out eval loss per task after
every round, the noise the server added and the ε spent (from ``metrics.jsonl``).

    .venv/bin/python benchmarks/central_dp_utility.py --output-root /tmp/cdp \
        [--rounds 2] [--epsilon 8] [--clip-norms 0.05,0.01]
    .venv/bin/python benchmarks/central_dp_utility.py --output-root /tmp/cdp --print-only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from server.run_dir import read_metrics  # noqa: E402

# The training budget of the README's bundled sweep: 1 Sigma + 2 shared steps per round.
BASE = {
    "model.source": "bundled",
    "eval.every": 0,
    "train.sigma-steps": 1,
    "train.shared-steps": 2,
    "train.batch-size": 2,
    "train.max-seq-length": 160,
    "train.eval-examples": 6,
    "strategy.name": "fedavg",
    "strategy.min-train-nodes": 3,
    "strategy.min-available-nodes": 3,
    "privacy.secure-aggregation": True,
    "seed": 0,
}


def _runs(args) -> dict[str, dict]:
    runs = {"no-dp": {}}
    for clip in args.clip_norms.split(","):
        runs[f"central-eps{args.epsilon:g}-clip{clip}"] = {
            "privacy.dp-mode": "central",
            "privacy.dp-clip-norm": float(clip),
            "privacy.dp-target-epsilon": args.epsilon,
        }
    return runs


def _table(root: Path, names: list[str]) -> None:
    print("| run | round | generation | translation | summarization | noise std | ε spent |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        for record in read_metrics(root / name):
            loss = record.get("eval_loss_by_task", {})
            dp = record.get("central_dp", {})
            cells = [f"{loss[t]:.3f}" if t in loss else "-" for t in TASKS]
            noise = f"{dp['noise_std']:.4g}" if dp else "0"
            eps = f"{dp['epsilon_spent']:.2f}" if dp else "-"
            print(f"| {name} | {record['round']} | {' | '.join(cells)} | {noise} | {eps} |")


TASKS = ("generation", "translation", "summarization")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-root", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--clip-norms", default="0.05")
    parser.add_argument("--print-only", action="store_true")
    args = parser.parse_args()
    runs = _runs(args)
    if not args.print_only:
        from simulations.engine import simulate

        for name, overrides in runs.items():
            if (args.output_root / name / "metrics.jsonl").exists():
                continue  # finished earlier: keep it
            t0 = time.perf_counter()
            simulate(
                BASE
                | {
                    "num-server-rounds": args.rounds,
                    "output-dir": str(args.output_root),
                    "run-name": name,
                    "data.root": str((REPO / ".." / "shared" / "data").resolve()),
                }
                | overrides,
                num_supernodes=3,
            )
            summary = {"run": name, "seconds": round(time.perf_counter() - t0, 1)}
            print(json.dumps(summary), flush=True)
    _table(args.output_root, list(runs))


if __name__ == "__main__":
    main()
