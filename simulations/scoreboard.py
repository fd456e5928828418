"""The committed summary of an experiment's held-out results: ``simulations/results/<name>.json``.

Issue 11 asks for results users can check: one small JSON per experiment, in the repository,
with exactly this shape::

    {"experiment": str, "seeds": [int],
     "tasks": {task: {strategy_label: {metric: {"mean": float, "std": float, "n": int}}}},
     "lower_is_better": [metric names]}

A metric is ``<round>.<name>``: ``best.test-loss``, ``best.codebleu``, ``final.pass@1``, ...,
from each run's ``test_metrics.json`` (:mod:`simulations.heldout`): the held-out loss and task
metrics at the run's best round (chosen on validation) and at its final round. ``mean`` and
``std`` are over seeds (sample std, 0 for one seed), ``n`` the number of seeds. Where the data
came from, on what hardware and in how long goes beside it, to ``<name>.meta.json``.
"""

from __future__ import annotations

import json
import math
import platform
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from simulations.heldout import REPORTED, TEST_LOSS, read_test_metrics, round_loss
from simulations.results import RunResult, group_by_label, mean_std

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Task metrics where lower is better; every other task metric (pass@1, BLEU, ...) is a score.
LOWER_IS_BETTER_NAMES = (TEST_LOSS,)


def metric_name(kind: str, name: str) -> str:
    return f"{kind}.{name}"


def run_metrics(run: RunResult) -> dict[str, dict[str, float]]:
    """Task -> ``{<round>.<metric>: value}`` of one run, {} before its held-out scoring."""
    found = read_test_metrics(run.run_dir) or {}
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for kind in REPORTED:
        for task, metrics in found.get("reported", {}).get(kind, {}).items():
            out[task] |= {metric_name(kind, m): float(v) for m, v in metrics.items()}
    return dict(out)


def _stat(values: Sequence[float]) -> dict[str, float | int]:
    mean, std = mean_std(values)
    return {"mean": mean, "std": std or 0.0, "n": len(values)}


def build_summary(name: str, runs: Iterable[RunResult], order: Sequence[str] = ()) -> dict:
    """The summary of ``runs`` (labels in ``order`` first); runs not yet scored are left out."""
    runs = list(runs)
    tasks: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    seeds: set[int] = set()
    for label, group in group_by_label(runs, order).items():
        values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for run in group:
            scored = run_metrics(run)
            seeds |= {run.seed} if scored else set()
            for task, metrics in scored.items():
                for metric, value in metrics.items():
                    if math.isfinite(value):
                        values[task][metric].append(value)
        for task, metrics in values.items():
            tasks[task][label] = {m: _stat(v) for m, v in sorted(metrics.items())}
    names = {m for labels in tasks.values() for ms in labels.values() for m in ms}
    lower = sorted(m for m in names if m.split(".", 1)[1] in LOWER_IS_BETTER_NAMES)
    return {
        "experiment": name,
        "seeds": sorted(seeds),
        "tasks": {task: tasks[task] for task in sorted(tasks)},
        "lower_is_better": lower,
    }


def validation_curves(
    runs: Iterable[RunResult], order: Sequence[str] = ()
) -> dict[str, dict[str, float]]:
    """Label -> round -> validation loss (mean over tasks, then over seeds): the curve that
    shows where training alone reaches its best and then flattens or overfits."""
    curves: dict[str, dict[str, float]] = {}
    for label, group in group_by_label(runs, order).items():
        by_round: dict[int, list[float]] = defaultdict(list)
        for run in group:
            for record in run.ok_records:
                loss = round_loss(record)
                if math.isfinite(loss):
                    by_round[record["round"]].append(loss)
        if by_round:
            curves[label] = {str(r): mean_std(by_round[r])[0] for r in sorted(by_round)}
    return curves


def per_seed(runs: Iterable[RunResult], order: Sequence[str] = ()) -> dict[str, dict]:
    """Label -> seed -> its validation curve (round -> loss, mean over tasks) and held-out
    metrics (task -> metric -> value), for the scored runs: what a comparison on the seeds
    that several labels share is made from (``readme.target_check``)."""
    out: dict[str, dict] = {}
    for label, group in group_by_label(scored_runs(runs), order).items():
        out[label] = {}
        for run in sorted(group, key=lambda r: r.seed):
            curve = {str(r["round"]): round_loss(r) for r in run.ok_records}
            out[label][str(run.seed)] = {
                "validation_loss": {k: v for k, v in curve.items() if math.isfinite(v)},
                "heldout": run_metrics(run),
            }
    return out


def scored_runs(runs: Iterable[RunResult]) -> list[RunResult]:
    """The runs whose held-out scoring is done: what the summary, its meta and plot cover."""
    return [r for r in runs if read_test_metrics(r.run_dir) is not None]


def build_meta(name: str, runs: Iterable[RunResult], order: Sequence[str] = ()) -> dict[str, Any]:
    """How the summary was made: the commands, the hardware, the wall time of its runs; the
    validation curves of the scored runs; and each run's own curve and held-out metrics."""
    runs = scored_runs(runs)
    hosts = {json.dumps(r.summary.get("host", {}), sort_keys=True) for r in runs}
    return {
        "experiment": name,
        "command": f"python -m simulations run simulations/{name}.toml && "
        f"python -m simulations report experiments/{name}",
        "hardware": [json.loads(h) for h in sorted(hosts) if h != "{}"] or [_this_host()],
        "runs": len(runs),
        "wall_seconds": round(sum(r.summary_value("wall_seconds") or 0.0 for r in runs), 1),
        "validation_loss": validation_curves(runs, order),
        "per_seed": per_seed(runs, order),
    }


def _this_host() -> dict[str, Any]:
    import os

    return {"cpus": os.cpu_count(), "platform": platform.platform()}


def _dump(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def curves_path(summary_path: Path) -> Path:
    """The committed plot of the validation loss per round, beside the summary."""
    return Path(summary_path).with_suffix(".validation.png")


def write_summary(
    name: str, runs: Sequence[RunResult], order: Sequence[str] = (), out_dir: Path = RESULTS_DIR
) -> Path:
    """Write ``<out_dir>/<name>.json`` and ``<name>.meta.json``; returns the summary's path."""
    path = Path(out_dir) / f"{name}.json"
    _dump(path, build_summary(name, runs, order))
    _dump(path.with_name(f"{name}.meta.json"), build_meta(name, runs, order))
    return path
