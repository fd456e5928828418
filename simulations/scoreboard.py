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
came from, on what hardware and in how long goes beside it, to ``<name>.meta.json``, with each
scored run's own record (``per_seed``), so that later reports add to the committed runs
(:func:`write_summary`) rather than needing every run directory at once.
"""

from __future__ import annotations

import json
import math
import platform
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from codetasks.data.jsonl import read_json_object
from server.round_record import is_round
from simulations.heldout import REPORTED, TEST_LOSS, read_test_metrics, round_loss
from simulations.results import RunResult, json_float, mean_std

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Task metrics where lower is better; every other task metric (pass@1, BLEU, ...) is a score.
LOWER_IS_BETTER_NAMES = (TEST_LOSS,)


def metric_name(kind: str, name: str) -> str:
    return f"{kind}.{name}"


def _reported(found: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Task -> ``{<round>.<metric>: value}`` of one run's parsed ``test_metrics.json``."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for kind in REPORTED:
        for task, metrics in found.get("reported", {}).get(kind, {}).items():
            out[task] |= {metric_name(kind, m): float(v) for m, v in metrics.items()}
    return dict(out)


@dataclass(frozen=True)
class Scored:
    """One scored (label, seed) run: all the summary and its meta are made from.

    Made from a run directory (:func:`from_runs`) or from the ``per_seed`` record of a
    committed meta file (:func:`from_meta`): run directories live one working session, the
    committed record stays, so later runs add to it (:func:`merge`) instead of replacing it.
    """

    label: str
    seed: int
    curve: dict[str, float]  # round -> validation loss, mean over tasks
    heldout: dict[str, dict[str, float]]  # task -> metric -> value
    wall_seconds: float = 0.0
    host: dict[str, Any] = field(default_factory=dict)
    # each attempt's starting point: [0] ran unbroken, [0, 4] resumed after round 4; None when
    # the record predates it. Says which runs crossed a restart, for an audit of resume effects.
    resumed_after: list[int] | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.label, self.seed

    def record(self) -> dict[str, Any]:
        """Its ``per_seed`` entry in the meta file."""
        return {
            "validation_loss": self.curve,
            "heldout": self.heldout,
            "wall_seconds": self.wall_seconds,
            "host": self.host,
            **({} if self.resumed_after is None else {"resumed_after": self.resumed_after}),
        }


def from_runs(runs: Iterable[RunResult]) -> list[Scored]:
    """The runs on disk whose held-out scoring is done (each ``test_metrics.json`` read once)."""
    out = []
    for run in runs:
        found = read_test_metrics(run.run_dir)
        if found is None:
            continue
        curve = {str(r["round"]): round_loss(r) for r in run.ok_records}
        out.append(
            Scored(
                run.label,
                run.seed,
                {k: v for k, v in curve.items() if math.isfinite(v)},
                _reported(found),
                run.summary_value("wall_seconds") or 0.0,
                _host(run.summary.get("host")),
                _resumed_after(run.summary.get("attempts")),
            )
        )
    return out


def _host(value: Any) -> dict[str, Any]:
    """A run's host record (cpus, platform, ...); {} where it is not a JSON object."""
    return dict(value) if isinstance(value, Mapping) else {}


def _resumed_after(attempts: Any) -> list[int] | None:
    """Each attempt's ``resumed_after_round`` from a run summary; None when it has none."""
    if not isinstance(attempts, list) or not attempts:
        return None
    found = [a.get("resumed_after_round") if isinstance(a, Mapping) else None for a in attempts]
    return found if _round_list(found) else None


def _round_list(value: Any) -> bool:
    return isinstance(value, list) and all(map(is_round, value))


def _number(value: Any, where: str) -> float:
    number = json_float(value)
    if number is None:
        raise ValueError(f"{where}: expected a number, got {_short(value)}")
    return number


def _short(value: Any) -> str:
    """A value's repr cut to what an error line can hold (a hand-typed int of 400 digits)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _numbers(table: Any, where: str) -> dict[str, float]:
    if not isinstance(table or {}, Mapping):
        raise ValueError(f"{where}: expected a table of numbers")
    return {str(k): _number(v, f"{where}.{k}") for k, v in (table or {}).items()}


def from_meta(meta: Mapping[str, Any]) -> list[Scored]:
    """The runs a committed meta file records (``per_seed``); raises ValueError naming the
    entry that is malformed. Entries written before runs kept their own wall time and host
    share out the recorded total wall time equally and take the recorded hardware, so the
    totals stay what was measured."""
    per_seed = meta.get("per_seed") or {}
    if not isinstance(per_seed, Mapping):
        raise ValueError("per_seed: expected a table of label -> seed -> run")
    out: list[Scored] = []
    no_wall: set[tuple[str, int]] = set()  # records written before runs kept their own
    for label, seeds in per_seed.items():
        if not isinstance(seeds, Mapping):
            raise ValueError(f"per_seed.{label}: expected a table of seed -> run")
        for seed, entry in seeds.items():
            where = f"per_seed.{label}.{seed}"
            if not isinstance(entry, Mapping) or not str(seed).lstrip("-").isdecimal():
                raise ValueError(f"{where}: expected an integer seed and a table")
            curve = _numbers(entry.get("validation_loss"), f"{where}.validation_loss")
            heldout_table = entry.get("heldout") or {}
            if not isinstance(heldout_table, Mapping):
                raise ValueError(f"{where}.heldout: expected a table of task -> metrics")
            heldout = {
                str(task): _numbers(metrics, f"{where}.heldout.{task}")
                for task, metrics in heldout_table.items()
            }
            wall = entry.get("wall_seconds")
            if wall is None:
                no_wall.add((str(label), int(seed)))
            out.append(
                Scored(
                    str(label),
                    int(seed),
                    curve,
                    heldout,
                    0.0 if wall is None else _number(wall, f"{where}.wall_seconds"),
                    _host(entry.get("host")),
                    _resumed_record(entry.get("resumed_after"), where),
                )
            )
    if no_wall:
        known = sum(s.wall_seconds for s in out)
        total = _number(meta.get("wall_seconds") or 0.0, "wall_seconds")
        share = max(0.0, total - known) / len(no_wall)
        hosts = [h for h in meta.get("hardware") or [] if isinstance(h, Mapping)]
        host = dict(hosts[0]) if len(hosts) == 1 else {}
        out = [
            replace(s, wall_seconds=share, host=s.host or host) if s.key in no_wall else s
            for s in out
        ]
    return out


def _resumed_record(value: Any, where: str) -> list[int] | None:
    if value is None:
        return None
    if not _round_list(value):
        raise ValueError(f"{where}.resumed_after: expected a list of round numbers, got {value!r}")
    return list(value)


def merge(committed: Iterable[Scored], fresh: Iterable[Scored]) -> list[Scored]:
    """``committed`` plus ``fresh``; a fresh run replaces the committed one of its (label,
    seed)."""
    out = {s.key: s for s in committed}
    out.update((s.key, s) for s in fresh)
    return list(out.values())


def _by_label(scored: Iterable[Scored], order: Sequence[str]) -> dict[str, list[Scored]]:
    """Label -> its runs by seed; labels in ``order`` first, then the rest sorted."""
    groups: dict[str, list[Scored]] = defaultdict(list)
    for s in scored:
        groups[s.label].append(s)
    labels = [lb for lb in order if lb in groups] + sorted(set(groups) - set(order))
    return {lb: sorted(groups[lb], key=lambda s: s.seed) for lb in labels}


def _stat(values: Sequence[float]) -> dict[str, float | int]:
    mean, std = mean_std(values)
    return {"mean": mean, "std": std or 0.0, "n": len(values)}


def build_summary(name: str, scored: Iterable[Scored], order: Sequence[str] = ()) -> dict:
    """The summary of the scored runs (labels in ``order`` first)."""
    tasks: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    seeds: set[int] = set()
    for label, group in _by_label(scored, order).items():
        values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for run in group:
            seeds |= {run.seed} if run.heldout else set()
            for task, metrics in run.heldout.items():
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


def curve_stats(
    scored: Iterable[Scored], order: Sequence[str] = ()
) -> dict[str, dict[int, tuple[float, float]]]:
    """Label -> round -> (mean, sample std or 0) over seeds of the validation loss."""
    out: dict[str, dict[int, tuple[float, float]]] = {}
    for label, group in _by_label(scored, order).items():
        by_round: dict[int, list[float]] = defaultdict(list)
        for run in group:
            for rnd, loss in run.curve.items():
                by_round[int(rnd)].append(loss)
        if by_round:
            stats = {r: mean_std(by_round[r]) for r in sorted(by_round)}
            out[label] = {r: (m, s or 0.0) for r, (m, s) in stats.items()}
    return out


def validation_curves(scored: Iterable[Scored], order: Sequence[str] = ()) -> dict:
    """Label -> round -> validation loss (mean over tasks, then over seeds): the curve that
    shows where training alone reaches its best and then flattens or overfits."""
    stats = curve_stats(scored, order)
    return {label: {str(r): m for r, (m, _) in c.items()} for label, c in stats.items()}


def per_seed(scored: Iterable[Scored], order: Sequence[str] = ()) -> dict[str, dict]:
    """Label -> seed -> its validation curve (round -> loss, mean over tasks), held-out
    metrics (task -> metric -> value), wall time and host: what a comparison on the seeds
    that several labels share is made from (``readme.target_check``), and what later
    reports add to (:func:`from_meta`)."""
    return {
        label: {str(run.seed): run.record() for run in group}
        for label, group in _by_label(scored, order).items()
    }


def build_meta(name: str, scored: Iterable[Scored], order: Sequence[str] = ()) -> dict[str, Any]:
    """How the summary was made: the commands, the hardware, the wall time of its runs; the
    validation curves of the scored runs; and each run's own curve and held-out metrics."""
    scored = list(scored)
    hosts = {json.dumps(s.host, sort_keys=True) for s in scored}
    return {
        "experiment": name,
        "command": f"python -m simulations run simulations/{name}.toml && "
        f"python -m simulations report experiments/{name}",
        "hardware": [json.loads(h) for h in sorted(hosts) if h != "{}"] or [_this_host()],
        "runs": len(scored),
        "wall_seconds": round(sum(s.wall_seconds for s in scored), 1),
        "validation_loss": validation_curves(scored, order),
        "per_seed": per_seed(scored, order),
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


def read_meta(path: Path) -> dict[str, Any]:
    """A committed meta file, {} where there is none; raises ValueError if it is malformed."""
    path = Path(path)
    if not path.exists():
        return {}
    return read_json_object(path)  # its DataError (a ValueError) names the file


def meta_path(summary_path: Path) -> Path:
    return Path(summary_path).with_suffix(".meta.json")


def write_summary(
    name: str,
    scored: Sequence[Scored],
    order: Sequence[str] = (),
    out_dir: Path = RESULTS_DIR,
) -> tuple[Path, list[Scored]]:
    """Write ``<out_dir>/<name>.json`` and ``<name>.meta.json`` from ``scored`` and the runs
    the committed meta file already records (:func:`merge`: a run scored again replaces its
    record). Returns the summary's path and the runs it covers."""
    path = Path(out_dir) / f"{name}.json"
    committed = read_meta(meta_path(path))  # its errors name the file already
    try:
        scored = merge(from_meta(committed), scored)
    except ValueError as exc:
        raise ValueError(f"{meta_path(path)}: {exc}") from exc
    _dump(path, build_summary(name, scored, order))
    _dump(meta_path(path), build_meta(name, scored, order))
    return path, list(scored)
