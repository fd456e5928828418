"""Turn an experiment directory into ``report/report.md`` and ``report/index.html`` with PNGs.

    python -m simulations report experiments/<name>

The report holds: per task, the final-round metrics of every strategy as mean +- sample std
over seeds (the last round of each run that did not fail); the cost of every strategy (total
bytes down + up, wall time, peak memory of the run's process tree); curves of every metric
against the round (mean over seeds, shaded +- std); the similarity heatmap and the cluster
assignments of similarity-aware runs; a table of every run; and a list of what is missing.
Missing values read "n/a". It also writes TensorBoard event files for runs that lack them.
The HTML page is static: it links only the PNGs next to it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from colora.contract import TRAIN_LOSS
from runconfig.fields import ConfigError
from server.tensorboard import sync_run
from simulations import plots, scoreboard
from simulations.experiment import Experiment, parse_experiment, run_name
from simulations.markup import (
    Block,
    Bullets,
    Heading,
    Image,
    Paragraph,
    Table,
    to_html,
    to_markdown,
)
from simulations.results import (
    RunResult,
    group_by_label,
    load_runs,
    mean_std,
    metrics_of,
)
from simulations.runner import EXPERIMENT_COPY

NA = "n/a"
VALIDATION_TITLE = "validation loss (mean over tasks)"
_MB, _GIB = 1e6, 1024**3


def fmt_stat(values: Sequence[float], digits: int = 4) -> str:
    """``mean ± std`` over seeds, the mean alone for one seed, ``n/a`` for none."""
    if not values:
        return NA
    mean, std = mean_std(values)
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _experiment(exp_dir: Path) -> Experiment | None:
    copy = exp_dir / EXPERIMENT_COPY
    try:
        return parse_experiment(copy.read_text()) if copy.exists() else None
    # written for another version of the run config, or unreadable: the report then lacks
    # the planned runs and the strategies' order, nothing else
    except (ConfigError, OSError, UnicodeDecodeError):
        return None


def task_tables(
    groups: Mapping[str, Sequence[RunResult]],
    tasks: Sequence[str],
    metrics: Sequence[tuple[str, str]],
) -> list[Block]:
    """One table per task: strategies x metrics, final round, mean ± std over seeds."""
    blocks: list[Block] = []
    for task in tasks:
        names = [m for m, t in metrics if t == task and m != TRAIN_LOSS]
        names += [TRAIN_LOSS] if (TRAIN_LOSS, task) in metrics else []
        rows = []
        for label, runs in groups.items():
            finals = [r.final_metrics() for r in runs]
            cells = [fmt_stat([f[(m, task)] for f in finals if (m, task) in f]) for m in names]
            rows.append([label, str(sum(1 for f in finals if f)), *cells])
        blocks += [Heading(3, task), Table(["strategy", "seeds", *names], rows)]
    return blocks


def _summary_values(runs: Sequence[RunResult], key: str, scale: float) -> list[float]:
    return [v / scale for r in runs if (v := r.summary_value(key)) is not None]


def cost_table(groups: Mapping[str, Sequence[RunResult]]) -> Table:
    rows = []
    for label, runs in groups.items():
        complete = sum(r.complete for r in runs)
        rows.append(
            [
                label,
                f"{complete}/{len(runs)}",
                fmt_stat([r.total_bytes() / _MB for r in runs if r.records], 2),
                fmt_stat(_summary_values(runs, "wall_seconds", 1.0), 1),
                fmt_stat(_summary_values(runs, "peak_rss_bytes", _GIB), 2),
                fmt_stat(_summary_values(runs, "peak_pss_bytes", _GIB), 2),
            ]
        )
    header = [
        "strategy",
        "complete runs",
        "bytes down+up (MB)",
        "wall time (s)",
        "peak RSS (GiB)",
        "peak PSS (GiB)",
    ]
    return Table(header, rows)


def runs_table(runs: Sequence[RunResult]) -> Table:
    rows = []
    for run in runs:
        wall, rss = run.summary_value("wall_seconds"), run.summary_value("peak_rss_bytes")
        rows.append(
            [
                run.run_dir.name,
                run.status,
                f"{run.rounds_done}/{run.num_rounds or NA}",
                ", ".join(map(str, run.failed_rounds)) or "none",
                NA if wall is None else f"{wall:.1f}",
                NA if rss is None else f"{rss / _GIB:.2f}",
                f"{run.total_bytes() / _MB:.2f}",
            ]
        )
    header = [
        "run",
        "status",
        "rounds",
        "failed rounds",
        "wall time (s)",
        "peak RSS (GiB)",
        "bytes (MB)",
    ]
    return Table(header, rows)


def curve_blocks(
    groups: Mapping[str, Sequence[RunResult]], metrics: Sequence[tuple[str, str]], out: Path
) -> list[Block]:
    blocks: list[Block] = []
    for name in dict.fromkeys(m for m, _ in metrics):
        tasks = [t for m, t in metrics if m == name]
        path = plots.plot_metric(groups, name, tasks, out / f"curve-{plots.slug(name)}.png")
        blocks += [Heading(3, name), Image(path.name, f"{name} against the round per task")]
    return blocks


def _assignment_text(run: RunResult) -> str:
    grid = plots.cluster_grid(run)
    if grid is None:
        return ""
    rounds, clients, values = grid
    members: dict[int, list[str]] = {}
    for client, cluster in zip(clients, values[-1], strict=True):
        members.setdefault(int(cluster), []).append(client)
    parts = [f"cluster {k}: clients {', '.join(v)}" for k, v in sorted(members.items())]
    return f"After round {rounds[-1]}: " + "; ".join(parts) + "."


def similarity_blocks(runs: Sequence[RunResult], out: Path) -> list[Block]:
    blocks: list[Block] = []
    for run in runs:
        name = run.run_dir.name
        heat = plots.plot_similarity(run, out / f"similarity-{plots.slug(name)}.png")
        grid = plots.plot_clusters(run, out / f"clusters-{plots.slug(name)}.png")
        if heat is None and grid is None:
            continue
        blocks.append(Heading(3, name))
        if heat is not None:
            blocks.append(Image(heat.name, f"similarity heatmap of {name}"))
        if grid is not None:
            blocks += [
                Image(grid.name, f"cluster assignments of {name}"),
                Paragraph(_assignment_text(run)),
            ]
    return blocks or [Paragraph("No run logged a similarity matrix or cluster assignments.")]


def missing_items(runs: Sequence[RunResult], exp: Experiment | None) -> list[str]:
    found = {r.run_dir.name for r in runs}
    items = []
    if exp is not None:
        planned = [run_name(s.label, seed) for s in exp.strategies for seed in exp.settings.seeds]
        items += [f"`{n}`: planned, not run" for n in planned if n not in found]
    for run in runs:
        if not run.complete:
            items.append(
                f"`{run.run_dir.name}`: {run.rounds_done} of {run.num_rounds or NA} "
                "rounds; its final values are from its last round"
            )
        if not run.summary:
            items.append(
                f"`{run.run_dir.name}`: no run_summary.json (not run by the "
                "experiment runner): wall time and peak memory n/a"
            )
        if run.failed_rounds:
            items.append(
                f"`{run.run_dir.name}`: rounds {run.failed_rounds} failed (no "
                "aggregate; the previous shared adapter was kept)"
            )
    return items or ["nothing: every planned run is complete"]


def build_report(exp_dir: Path, out: Path) -> list[Block]:
    exp = _experiment(exp_dir)
    order = [s.label for s in exp.strategies] if exp else []
    runs = load_runs(exp_dir)
    groups = group_by_label(runs, order)
    metrics = metrics_of(runs)
    title = f"Experiment {exp.settings.name if exp else exp_dir.name}"
    intro = [Heading(1, title)]
    if exp is not None and exp.settings.description:
        intro.append(Paragraph(exp.settings.description))
    intro.append(
        Paragraph(
            f"Generated {time.strftime('%Y-%m-%d %H:%M')} from `{exp_dir}`: {len(runs)} runs, "
            f"{len(groups)} strategies. Values are the last round of each run that did not "
            "fail, as mean ± sample standard deviation (n − 1) over seeds; one seed shows the "
            "value alone. "
            f"TensorBoard: `tensorboard --logdir {exp_dir / 'runs'}`."
        )
    )
    return [
        *intro,
        Heading(2, "Final round per task"),
        *task_tables(groups, sorted({t for _, t in metrics}), metrics),
        Heading(2, "Cost"),
        cost_table(groups),
        Paragraph(
            "Bytes are the payloads sent down and up over all rounds. Wall time covers the "
            "whole run process (Ray start, model loading, every round). Peak memory is of "
            "the run's process tree (run process and Ray workers); RSS counts shared pages "
            "once per process, PSS shares them out."
        ),
        Heading(2, "Curves"),
        *curve_blocks(groups, metrics, out),
        Heading(2, "Similarity and clusters"),
        *similarity_blocks(runs, out),
        Heading(2, "Runs"),
        runs_table(runs),
        Heading(2, "Missing data"),
        Bullets(missing_items(runs, exp)),
    ]


def write_report(exp_dir: Path, results_dir: Path = scoreboard.RESULTS_DIR) -> Path:
    """Write the report; returns the path of ``index.html``. An experiment with held-out
    scoring (``[experiment] test-examples``) also gets its committed summary in
    ``results_dir`` (:mod:`simulations.scoreboard`)."""
    exp_dir = Path(exp_dir).resolve()
    if not (exp_dir / "runs").is_dir():
        raise FileNotFoundError(f"{exp_dir} has no runs/ directory: not an experiment directory")
    out = exp_dir / "report"
    out.mkdir(exist_ok=True)
    for stale in out.glob("*.png"):
        stale.unlink()
    for run in load_runs(exp_dir):
        if not run.run_dir.is_symlink():  # read a linked run, but write nothing outside
            sync_run(run.run_dir)
    blocks = build_report(exp_dir, out)
    (out / "report.md").write_text(to_markdown(blocks))
    title = blocks[0].text if isinstance(blocks[0], Heading) else exp_dir.name
    (out / "index.html").write_text(to_html(blocks, title))
    exp = _experiment(exp_dir)
    if exp is not None and exp.settings.test_examples > 0:
        labels = [s.label for s in exp.strategies]
        fresh = scoreboard.from_runs(load_runs(exp_dir))
        summary, scored = scoreboard.write_summary(exp.settings.name, fresh, labels, results_dir)
        # The validation curves beside the committed summary (its runs): the README shows them.
        curves = scoreboard.curve_stats(scored, labels)
        if curves:
            plots.plot_curves(curves, scoreboard.curves_path(summary), VALIDATION_TITLE)
    return out / "index.html"
