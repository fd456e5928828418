"""The README's results block, built from a committed summary (:mod:`simulations.scoreboard`).

    python -m simulations readme simulations/results/<name>.json [--readme README.md]

prints the block, or replaces it in the README between ``<!-- results:<name> -->`` and
``<!-- /results:<name> -->``. The block holds the command, the hardware and the wall time (from
``<name>.meta.json``), one table per task (strategy x metric, mean ± std over seeds), and a
plain verdict per task: which strategy won each main metric, by how much, and how that margin
compares with the seed-to-seed spread (the larger std of the winner and the runner-up).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from simulations.results import finite_float
from simulations.scoreboard import curves_path, from_meta, meta_path, read_meta
from simulations.scoreboard import per_seed as seed_records

# The metric each task is judged on besides the held-out loss (issue 11).
MAIN_METRIC = {"generation": "pass@1", "translation": "codebleu", "summarization": "rouge_l"}
ROUNDS = ("best", "final")
# The labels issue 11's target judges: strategies that weigh clients by task similarity.
SIMILARITY_AWARE = ("similarity-weighted", "clustered")
# An experiment name as simulations.experiment allows it: it goes into the README's markers.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def _cell(stat: Mapping[str, float] | None) -> str:
    if not stat:
        return "n/a"
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}" if stat["n"] > 1 else f"{stat['mean']:.3f}"


def task_columns(task: str, labels: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Held-out loss and the main metric at the best then the final round; the secondary
    metrics (BLEU-4, chrF, the sandbox's outcome shares, ...) stay in the summary file."""
    names = {m for metrics in labels.values() for m in metrics}
    main = [f"{k}.{m}" for k in ROUNDS for m in ("test-loss", MAIN_METRIC.get(task, ""))]
    return [m for m in main if m in names]


def _similarity_aware(label: str) -> bool:
    return any(label == name or label.startswith(f"{name}-") for name in SIMILARITY_AWARE)


def _shared_seeds(per_seed: Mapping[str, Mapping[str, Any]], labels: list[str]) -> list[str]:
    """The seeds every one of ``labels`` has scored, in numeric order."""
    sets = [set(per_seed.get(label, {})) for label in labels]
    return sorted(set.intersection(*sets), key=int) if sets else []


def _lowest_validation(runs: Mapping[str, Any], seeds: list[str]) -> float:
    """The lowest round of the validation curve averaged over ``seeds`` (rounds all have)."""
    curves = [runs[seed]["validation_loss"] for seed in seeds]
    rounds = set.intersection(*(set(curve) for curve in curves))
    means = [sum(curve[r] for curve in curves) / len(curves) for r in rounds]
    return min(means) if means else float("inf")


def _heldout_values(runs: Mapping[str, Any], seeds: list[str], task: str, metric: str):
    """``metric`` on ``task`` for each of ``seeds``, or None if a seed lacks it."""
    values = [runs[seed]["heldout"].get(task, {}).get(metric) for seed in seeds]
    return None if None in values else values


def _paired(ours: list[float], theirs: list[float], lower: bool) -> str:
    """The per-seed differences of a clause, so a reader sees whether the sign of the mean's
    margin holds on every seed or rests on one (`` (per seed: -0.043, +0.012; better on 1,
    worse on 1 of 2)``); empty for a single seed, which the mean already is."""
    if len(ours) < 2:
        return ""
    diffs = [a - b for a, b in zip(ours, theirs, strict=True)]
    better = sum(d < 0 if lower else d > 0 for d in diffs)
    tied = diffs.count(0.0)
    counts = [f"better on {better}", f"worse on {len(diffs) - better - tied}"]
    counts += [f"tied on {tied}"] if tied else []
    listed = ", ".join(f"{d:+.3f}" for d in diffs)
    return f" (per seed: {listed}; {', '.join(counts)} of {len(diffs)})"


def _seed_list(seeds: list[str]) -> str:
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}"


def target_check(summary: Mapping[str, Any], meta: Mapping[str, Any] | None) -> list[str]:
    """Issue 11's target: the best similarity-aware configuration is at least as good as
    local-only on every task's held-out loss and main metric (best round), and beats fedavg
    on the held-out loss averaged over tasks.

    Labels are only ever compared on the seeds they share (``meta["per_seed"]``, each run's
    own curve and held-out metrics), so a label with more seeds scored never meets another on
    different data. "Best" is chosen on validation, never on the held-out numbers being
    judged: the lowest point of the validation curve averaged over the seeds every
    similarity-aware candidate (``similarity-weighted``, ``similarity-weighted-<personal
    part>``, ``clustered``...) has; it is then judged against local-only and fedavg on the
    seeds all three have."""
    per_seed = (meta or {}).get("per_seed") or {}
    candidates = [label for label in per_seed if _similarity_aware(label) and per_seed[label]]
    if not candidates:
        return ["Target: no similarity-aware strategy has results yet."]
    shared = _shared_seeds(per_seed, candidates)
    choice = [(_lowest_validation(per_seed[c], shared or list(per_seed[c])), c) for c in candidates]
    low, best = min(choice)
    on = f"on {_seed_list(shared)}" if shared else "on each one's own seeds (they share none)"
    lines = [
        f"Target (issue 11), for **{best}**, the similarity-aware configuration with the "
        f"lowest validation loss ({low:.3f}, {on}):",
        "",
    ]
    missing = [label for label in ("local-only", "fedavg") if label not in per_seed]
    judged = _shared_seeds(per_seed, [best, "local-only", "fedavg"])
    if missing or not judged:
        why = f"{' and '.join(missing)} has no result yet" if missing else "no seed has all three"
        return [*lines, f"Target **not met**: {why}."]
    met = True
    lines += [f"Judged on {_seed_list(judged)}, the seeds it, local-only and fedavg share:", ""]
    ours_losses, fedavg_losses = [], []  # per task: the values on each judged seed
    for task in summary["tasks"]:
        for metric, lower in (
            ("best.test-loss", True),
            (f"best.{MAIN_METRIC.get(task, '')}", False),
        ):
            ours = _heldout_values(per_seed[best], judged, task, metric)
            theirs = _heldout_values(per_seed["local-only"], judged, task, metric)
            if lower:  # the held-out loss: also averaged over tasks against fedavg's below
                ours_losses.append(ours)
            if ours is None or theirs is None:
                lines.append(f"- {task} `{metric}`: missing on a judged seed.")
                met = False
                continue
            mine, other = sum(ours) / len(ours), sum(theirs) / len(theirs)
            ok = mine <= other if lower else mine >= other
            met &= ok
            lines.append(
                f"- {task} `{metric}`: {mine:.3f} against local-only's {other:.3f}: "
                f"{'at least as good' if ok else 'worse'}{_paired(ours, theirs, lower)}."
            )
        fedavg_losses.append(_heldout_values(per_seed["fedavg"], judged, task, "best.test-loss"))
    if None in ours_losses or None in fedavg_losses or not ours_losses:
        lines.append("- `best.test-loss` averaged over tasks: missing on a judged seed.")
        met = False
    else:  # per seed, the mean over tasks; then over seeds (the same mean of means)
        ours_by_seed, fedavg_by_seed = (
            [sum(v) / len(v) for v in zip(*losses, strict=True)]
            for losses in (ours_losses, fedavg_losses)
        )
        mine = sum(ours_by_seed) / len(ours_by_seed)
        other = sum(fedavg_by_seed) / len(fedavg_by_seed)
        met &= mine < other
        lines.append(
            f"- `best.test-loss` averaged over tasks: {mine:.3f} against fedavg's {other:.3f}: "
            f"{'beats it' if mine < other else 'does not beat it'}"
            f"{_paired(ours_by_seed, fedavg_by_seed, True)}."
        )
    verdict_line = "**met**" if met else "**not met**"
    return [
        *lines,
        "",
        f"Target {verdict_line} on {_seed_list(judged)} ({len(judged)} of the 3 seeds the "
        "target is over).",
    ]


def verdict(task: str, metric: str, labels: Mapping[str, Mapping], lower: bool) -> str:
    """One sentence: the winner of ``metric`` on ``task``, its margin, and the seed spread."""
    ranked = sorted(
        ((stats[metric], label) for label, stats in labels.items() if metric in stats),
        key=lambda item: item[0]["mean"] * (1 if lower else -1),
    )
    if not ranked:
        return f"- **{task}**, `{metric}`: no results yet."
    (win, winner), rest = ranked[0], ranked[1:]
    if not rest:
        return f"- **{task}**, `{metric}`: only {winner} has results ({win['mean']:.3f})."
    second, runner_up = rest[0]
    margin = abs(win["mean"] - second["mean"])
    spread = max(win["std"], second["std"])
    if margin == 0:
        return f"- **{task}**, `{metric}`: {winner} and {runner_up} tie at {win['mean']:.3f}."
    if win["n"] != second["n"]:
        judged = f"on unequal seeds ({win['n']} against {second['n']}): not comparable"
    elif spread == 0:
        judged = "no seed spread to compare with (one seed)"
    elif margin > spread:
        judged = f"{margin / spread:.1f}x the seed-to-seed std ({spread:.3f}): a clear win"
    else:
        judged = f"within the seed-to-seed std ({spread:.3f}): not a clear win"
    return (
        f"- **{task}**, `{metric}` ({'lower' if lower else 'higher'} is better): **{winner}** "
        f"{win['mean']:.3f}, ahead of {runner_up} ({second['mean']:.3f}) by {margin:.3f}; "
        f"{judged}."
    )


def _header(meta: Mapping[str, Any], summary: Mapping[str, Any]) -> list[str]:
    hosts = "; ".join(
        f"{h.get('cpus', '?')} CPUs, {h.get('platform', '?')}" for h in meta.get("hardware", [])
    )
    hours = float(meta.get("wall_seconds", 0.0)) / 3600
    return [
        f"Command: `{meta.get('command', '')}`",
        "",
        f"Hardware: {hosts or 'n/a'}. Wall time of the {meta.get('runs', 0)} scored runs: "
        f"{hours:.2f} h. Seeds: {', '.join(map(str, summary['seeds'])) or 'none yet'}.",
        "",
    ]


def seed_cells(meta: Mapping[str, Any]) -> dict[str, str]:
    """Each label's scored seeds ("0, 1, 2"), from ``meta["per_seed"]``; empty when the meta
    file predates it. Rows over different seeds are not comparable, so the tables say which."""
    per_seed = meta.get("per_seed") or {}
    return {label: ", ".join(sorted(runs, key=int)) for label, runs in per_seed.items()}


def _row(label: str, seeds: Mapping[str, str], cells: list[str]) -> str:
    lead = [label, seeds.get(label, "")] if seeds else [label]
    return "| " + " | ".join([*lead, *cells]) + " |"


def _head(columns: list[str], seeds: Mapping[str, str]) -> list[str]:
    lead = ["strategy", "seeds"] if seeds else ["strategy"]
    return ["| " + " | ".join([*lead, *columns]) + " |", "|---" * (len(lead) + len(columns)) + "|"]


def curve_table(
    curves: Mapping[str, Mapping[str, float]],
    plot: str | None = None,
    seeds: Mapping[str, str] | None = None,
) -> list[str]:
    """Validation loss per round and strategy, the lowest of each row in bold; ``plot``: the
    path of the curves' image, linked above the table; ``seeds``: :func:`seed_cells`."""
    rounds = sorted({int(r) for curve in curves.values() for r in curve})
    if not rounds:
        return []
    seeds = seeds or {}
    image = [f"![validation loss per round, mean over tasks]({plot})", ""] if plot else []
    lines = [
        "Validation loss per round (mean over tasks and seeds; chooses each run's best round):",
        "",
        *image,
        *_head(list(map(str, rounds)), seeds),
    ]
    for label, curve in curves.items():
        low = min(curve.values(), default=math.nan)  # a label with no round yet: no bold
        cells = ["" if str(r) not in curve else f"{curve[str(r)]:.3f}" for r in rounds]
        cells = [f"**{c}**" if c and float(c) == round(low, 3) else c for c in cells]
        lines.append(_row(label, seeds, cells))
    return [*lines, ""]


def build_block(
    summary: Mapping[str, Any], meta: Mapping[str, Any], plot: str | None = None
) -> str:
    lower = set(summary["lower_is_better"])
    seeds = seed_cells(meta)
    lines = _header(meta, summary) + curve_table(meta.get("validation_loss", {}), plot, seeds)
    verdicts = []
    for task, labels in summary["tasks"].items():
        columns = task_columns(task, labels)
        lines += [f"**{task}**", "", *_head(columns, seeds)]
        for label, stats in labels.items():
            lines.append(_row(label, seeds, [_cell(stats.get(c)) for c in columns]))
        lines.append("")
        for metric in columns[:2]:  # the best round's loss and main metric
            verdicts.append(verdict(task, metric, labels, metric in lower))
    return "\n".join(
        [
            *lines,
            "Other metrics (BLEU-4, chrF, METEOR, the sandbox's outcome shares) are in the "
            "summary file.",
            "",
            "Who won (best round, chosen on validation):",
            "",
            *verdicts,
            "",
            *target_check(summary, meta),
        ]
    )


def replace_block(text: str, name: str, block: str) -> str:
    """``text`` with the block between the markers of ``name`` replaced (appended if there are
    none). Markers that are not exactly one start before one end (one missing, doubled,
    nested, swapped) raise ValueError: replacing then could cut the user's own text."""
    start, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    fresh = f"{start}\n{block}\n{end}"
    starts, ends = text.count(start), text.count(end)
    if starts == ends == 0:
        return text.rstrip("\n") + "\n\n" + fresh + "\n"
    if starts != 1 or ends != 1 or text.index(end) < text.index(start):
        raise ValueError(
            f"the markers {start} and {end} must appear once each, start first (found "
            f"{starts} and {ends}); fix them by hand"
        )
    head, rest = text.split(start, 1)
    return head + fresh + rest.split(end, 1)[1]


def _finite(value: Any) -> bool:
    return finite_float(value) is not None  # an int beyond any float is not one


def _expect(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise ValueError(f"{where}: expected {what}")


def check_summary(summary: Any) -> None:
    """Raise ValueError naming the first key where ``summary`` is not what
    :func:`simulations.scoreboard.build_summary` writes (a hand edit, a bad merge)."""
    _expect(isinstance(summary, dict), "summary", "a JSON object")
    name = summary.get("experiment")
    _expect(isinstance(name, str) and bool(_NAME.match(name)), "experiment", "an experiment name")
    seeds = summary.get("seeds")
    ok = isinstance(seeds, list) and all(_finite(s) for s in seeds)
    _expect(ok, "seeds", "a list of numbers")
    lower = summary.get("lower_is_better")
    _expect(isinstance(lower, list) and all(isinstance(m, str) for m in lower),
            "lower_is_better", "a list of metric names")  # fmt: skip
    tasks = summary.get("tasks")
    _expect(isinstance(tasks, dict), "tasks", "an object of task -> strategy -> metric")
    for task, labels in tasks.items():
        _expect(isinstance(labels, dict), f"tasks.{task}", "an object of strategy -> metric")
        for label, metrics in labels.items():
            where = f"tasks.{task}.{label}"
            _expect(isinstance(metrics, dict), where, "an object of metric -> statistics")
            for metric, stat in metrics.items():
                ok = (
                    isinstance(stat, dict)
                    and _finite(stat.get("mean"))
                    and _finite(stat.get("std"))
                    and isinstance(stat.get("n"), int)
                    and stat["n"] >= 1
                )
                _expect(ok, f"{where}.{metric}", '{"mean": number, "std": number, "n": int >= 1}')


def checked_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``meta`` with every run record complete (:func:`simulations.scoreboard.from_meta`,
    which names a malformed one); raises ValueError naming the first other key the block
    reads that is malformed."""
    curves = meta.get("validation_loss", {})
    _expect(isinstance(curves, dict), "validation_loss", "an object of strategy -> round -> loss")
    for label, curve in curves.items():
        ok = isinstance(curve, dict) and all(
            str(r).isdecimal() and _finite(v) for r, v in curve.items()
        )
        _expect(ok, f"validation_loss.{label}", "an object of round -> loss")
    hardware = meta.get("hardware", [])
    _expect(isinstance(hardware, list) and all(isinstance(h, dict) for h in hardware),
            "hardware", "a list of objects")  # fmt: skip
    _expect(_finite(meta.get("wall_seconds", 0.0)), "wall_seconds", "a number")
    _expect(_finite(meta.get("runs", 0)), "runs", "a number")
    _expect(isinstance(meta.get("command", ""), str), "command", "a string")
    records = from_meta(meta)  # first: it names a per_seed that is not a table
    return {**meta, "per_seed": seed_records(records, list(meta.get("per_seed") or {}))}


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path``'s content in one rename, so a kill leaves the old or the new file;
    a symbolic link stays one (its target is replaced)."""
    target = path.resolve()
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text)
    tmp.replace(target)


def write_readme_block(summary_path: Path, readme: Path | None = None) -> str:
    """The block for ``summary_path``; written into ``readme`` too when one is given. A
    malformed summary or meta file raises ValueError naming the file and key, and leaves
    ``readme`` untouched."""
    summary_path = Path(summary_path)
    try:
        summary = json.loads(summary_path.read_text())
        check_summary(summary)
    except ValueError as exc:  # JSON and UTF-8 errors are ValueErrors too
        raise ValueError(f"{summary_path}: {exc}") from exc
    except RecursionError:  # [[[[… past the parser's stack
        raise ValueError(f"{summary_path}: nested too deeply") from None
    path = meta_path(summary_path)
    meta = read_meta(path)  # its errors name the file already
    try:
        meta = checked_meta(meta)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    curves = curves_path(summary_path)
    plot = None
    if curves.exists():
        plot = os.path.relpath(curves.resolve(), (readme or Path.cwd()).resolve().parent)
    block = build_block(summary, meta, plot)
    if readme is not None:
        try:
            text = replace_block(readme.read_text(), summary["experiment"], block)
        except ValueError as exc:
            raise ValueError(f"{readme}: {exc}") from exc
        _write_atomically(readme, text)
    return block
