"""S and W of similarity-aware runs, as JSON lines: does the peer rule use the task signal?

For every run directory given and every round whose ``metrics.jsonl`` line logged a similarity
matrix S, prints one JSON line with S, the peer weights W of the rule in use
(``similarity.peer_weights`` with the run's ``strategy.self-weight`` and ``strategy.tau``),
the weights W_old of the rule used before issue 11 (softmax_j(S_ij / 0.5) over all j,
``similarity.mixing_weights``), the spectral clusters of S, and per client the ratio of its
same-task peer's weight to the largest weight of an other-task client (issue 11's target:
at least 3 after round 1). Task labels are read from the clients' ``num-examples.<task>``
metrics; the strategies never see them.

    .venv/bin/python benchmarks/similarity_signal.py experiments/similarity_signal/runs/*
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from strategies.maths.similarity import mixing_weights, peer_weights, spectral_clusters

OLD_TAU = 0.5  # the temperature the issue measured the old rule with


def client_tasks(record: Mapping) -> dict[str, str]:
    """Client id -> its task, from ``num-examples.<task>`` of the round's train metrics."""
    tasks = {}
    for entry in record.get("train", []):
        found = [k.split(".", 1)[1] for k in entry if k.startswith("num-examples.")]
        if len(found) == 1:
            tasks[str(entry["client-id"])] = found[0]
    return tasks


def peer_ratios(W: np.ndarray, tasks: Sequence[str]) -> list[float | None]:
    """Per client: best same-task peer weight / largest other-task weight (None: no peer)."""
    ratios: list[float | None] = []
    for i, task in enumerate(tasks):
        same = [W[i, j] for j in range(len(tasks)) if j != i and tasks[j] == task]
        other = [W[i, j] for j in range(len(tasks)) if tasks[j] != task]
        ratios.append(float(max(same) / max(other)) if same and other else None)
    return ratios


def pair_summary(S: np.ndarray, tasks: Sequence[str]) -> dict[str, list[float]]:
    """Off-diagonal S by kind: each task's same-task pairs, and every cross-task pair."""
    out: dict[str, list[float]] = {}
    for i in range(len(tasks)):
        for j in range(i + 1, len(tasks)):
            kind = tasks[i] if tasks[i] == tasks[j] else "cross-task"
            out.setdefault(kind, []).append(round(float(S[i, j]), 3))
    return out


def _round(matrix: np.ndarray) -> list[list[float]]:
    return np.round(matrix, 3).tolist()


def run_lines(run: Path) -> Iterator[dict]:
    config = json.loads((run / "config.json").read_text())
    # Runs from before issue 11 have no self weight or measure: they measured the factors.
    beta, tau = config.get("strategy.self-weight", 0.5), config["strategy.tau"]
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        logged = record.get("similarity")
        if not isinstance(logged, Mapping) or not logged.get("matrix"):
            continue
        S = np.asarray(logged["matrix"], dtype=np.float64)
        by_client = client_tasks(record)
        tasks = [by_client.get(c, "?") for c in logged["clients"]]
        W = peer_weights(S, beta, tau)
        old = mixing_weights(S, OLD_TAU)
        ratios, old_ratios = peer_ratios(W, tasks), peer_ratios(old, tasks)
        known = [r for r in ratios if r is not None]
        yield {
            "run": run.name,
            "round": record["round"],
            "measure": config.get("strategy.similarity-measure", "factors"),
            "self_weight": beta,
            "tau": tau,
            "clients": logged["clients"],
            "tasks": tasks,
            "S": _round(S),
            "pairs": pair_summary(S, tasks),
            "W": _round(W),
            "peer_ratio": [None if r is None else round(r, 2) for r in ratios],
            "min_peer_ratio": round(min(known), 2) if known else None,
            "W_old": _round(old),
            "old_peer_ratio": [None if r is None else round(r, 2) for r in old_ratios],
            "clusters": spectral_clusters(S, tau=tau).tolist(),
            "logged_clusters": record.get("clusters"),
        }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    args = parser.parse_args(argv)
    for run in args.runs:
        for line in run_lines(run):
            print(json.dumps(line))


if __name__ == "__main__":
    main()
