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
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from simulations.scoreboard import curves_path

# The metric each task is judged on besides the held-out loss (issue 11).
MAIN_METRIC = {"generation": "pass@1", "translation": "codebleu", "summarization": "rouge_l"}
ROUNDS = ("best", "final")
# The labels issue 11's target judges: strategies that weigh clients by task similarity.
SIMILARITY_AWARE = ("similarity-weighted", "clustered")


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


def _mean_of(labels_by_task: Mapping[str, Mapping[str, Mapping]], label: str, metric: str):
    """``label``'s ``metric`` averaged over the tasks, or None if a task lacks it."""
    values = [labels.get(label, {}).get(metric) for labels in labels_by_task.values()]
    return None if not values or None in values else sum(v["mean"] for v in values) / len(values)


def _similarity_aware(label: str) -> bool:
    return any(label == name or label.startswith(f"{name}-") for name in SIMILARITY_AWARE)


def target_check(summary: Mapping[str, Any], validation: Mapping[str, Mapping] | None) -> list[str]:
    """Issue 11's target, read off the summary: the best similarity-aware configuration is at
    least as good as local-only on every task's held-out loss and main metric (best round), and
    beats fedavg on the held-out loss averaged over tasks.

    "Best" is chosen on validation, never on the held-out numbers being judged: the lowest
    point of the label's validation curve (``validation``: label -> round -> loss, the mean
    over tasks and seeds, from the meta file), among labels of a similarity-aware strategy
    (``similarity-weighted``, ``similarity-weighted-<personal part>``, ``clustered``...)."""
    tasks = summary["tasks"]
    loss = "best.test-loss"
    scored = {label for labels in tasks.values() for label in labels}
    candidates = [
        (min(curve.values()), label)
        for label, curve in (validation or {}).items()
        if _similarity_aware(label) and label in scored and curve
    ]
    if not candidates:
        return ["Target: no similarity-aware strategy has results yet."]
    low, best = min(candidates)
    met = True
    lines = [
        f"Target (issue 11), for **{best}**, the similarity-aware configuration with the "
        f"lowest validation loss ({low:.3f}):",
        "",
    ]
    for task, labels in tasks.items():
        for metric, lower in ((loss, True), (f"best.{MAIN_METRIC.get(task, '')}", False)):
            ours, theirs = (
                labels.get(best, {}).get(metric),
                labels.get("local-only", {}).get(metric),
            )
            if ours is None or theirs is None:
                missing = best if ours is None else "local-only"
                lines.append(f"- {task} `{metric}`: {missing} has no result yet.")
                met = False
                continue
            ok = ours["mean"] <= theirs["mean"] if lower else ours["mean"] >= theirs["mean"]
            met &= ok
            lines.append(
                f"- {task} `{metric}`: {ours['mean']:.3f} against local-only's "
                f"{theirs['mean']:.3f}: {'at least as good' if ok else 'worse'}."
            )
    fedavg = _mean_of(tasks, "fedavg", loss)
    ours = _mean_of(tasks, best, loss)
    if fedavg is None:
        lines.append("- no fedavg result to compare the task average with.")
        met = False
    else:
        beats = ours < fedavg
        met &= beats
        lines.append(
            f"- `{loss}` averaged over tasks: {ours:.3f} against fedavg's {fedavg:.3f}: "
            f"{'beats it' if beats else 'does not beat it'}."
        )
    seeds = len(summary.get("seeds", []))
    verdict_line = "**met**" if met else "**not met**"
    return [*lines, "", f"Target {verdict_line} (seeds so far: {seeds}; the target is over 3)."]


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
    if spread == 0:
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


def curve_table(curves: Mapping[str, Mapping[str, float]], plot: str | None = None) -> list[str]:
    """Validation loss per round and strategy, the lowest of each row in bold; ``plot``: the
    path of the curves' image, linked above the table."""
    rounds = sorted({int(r) for curve in curves.values() for r in curve})
    if not rounds:
        return []
    image = [f"![validation loss per round and task]({plot})", ""] if plot else []
    lines = [
        "Validation loss per round (mean over tasks and seeds; chooses each run's best round):",
        "",
        *image,
        "| strategy | " + " | ".join(map(str, rounds)) + " |",
        "|---" * (len(rounds) + 1) + "|",
    ]
    for label, curve in curves.items():
        low = min(curve.values())
        cells = ["" if str(r) not in curve else f"{curve[str(r)]:.3f}" for r in rounds]
        cells = [f"**{c}**" if c and float(c) == round(low, 3) else c for c in cells]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def build_block(
    summary: Mapping[str, Any], meta: Mapping[str, Any], plot: str | None = None
) -> str:
    lower = set(summary["lower_is_better"])
    lines = _header(meta, summary) + curve_table(meta.get("validation_loss", {}), plot)
    verdicts = []
    for task, labels in summary["tasks"].items():
        columns = task_columns(task, labels)
        lines += [f"**{task}**", "", "| strategy | " + " | ".join(columns) + " |"]
        lines.append("|---" * (len(columns) + 1) + "|")
        for label, stats in labels.items():
            lines.append(f"| {label} | " + " | ".join(_cell(stats.get(c)) for c in columns) + " |")
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
            *target_check(summary, meta.get("validation_loss")),
        ]
    )


def replace_block(text: str, name: str, block: str) -> str:
    """``text`` with the block between the markers of ``name`` replaced (appended if none)."""
    start, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    fresh = f"{start}\n{block}\n{end}"
    if start not in text or end not in text:
        return text.rstrip("\n") + "\n\n" + fresh + "\n"
    head, rest = text.split(start, 1)
    return head + fresh + rest.split(end, 1)[1]


def write_readme_block(summary_path: Path, readme: Path | None = None) -> str:
    """The block for ``summary_path``; written into ``readme`` too when one is given."""
    summary = json.loads(Path(summary_path).read_text())
    meta_path = Path(summary_path).with_name(f"{summary['experiment']}.meta.json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    curves = curves_path(summary_path)
    plot = None
    if curves.exists():
        plot = os.path.relpath(curves.resolve(), (readme or Path.cwd()).resolve().parent)
    block = build_block(summary, meta, plot)
    if readme is not None:
        readme.write_text(replace_block(readme.read_text(), summary["experiment"], block))
    return block
