"""The report's PNG figures, drawn with matplotlib's Agg backend (no display needed).

- one figure per metric (eval loss, train loss, pass@1, BLEU, ...) with a panel per task:
  the metric against the round, a line per strategy (mean over seeds, shaded +- std);
- a similarity heatmap of a similarity-aware run's last logged round (S, and the mixing
  weights W when the strategy logs them);
- a cluster-assignment grid of a clustered run: rounds x clients, coloured by cluster.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # the Agg backend must be chosen first
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from server.round_record import strategy_log
from simulations.results import RunResult, series

_ANNOTATE_MAX = 12  # write the values into heatmap cells up to this many clients
_MAX_CLUSTER = 2**31 - 1  # a cluster index numpy's int grid can hold


def slug(text: str) -> str:
    """A file-name-safe form of a metric or run name: ``pass@1`` -> ``pass-1``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_metric(
    groups: Mapping[str, Sequence[RunResult]], metric: str, tasks: Sequence[str], path: Path
) -> Path:
    """``metric`` against the round, a panel per task, a line per strategy (+- std band)."""
    fig, axes = plt.subplots(
        1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False, layout="constrained"
    )
    colours = {label: f"C{i % 10}" for i, label in enumerate(groups)}  # same in every panel
    for ax, task in zip(axes[0], tasks, strict=True):
        for label, runs in groups.items():
            rounds, mean, std = series(runs, (metric, task))
            if not rounds:
                continue
            ax.plot(rounds, mean, marker="o", markersize=3, color=colours[label])
            low, high = np.subtract(mean, std), np.add(mean, std)
            ax.fill_between(rounds, low, high, color=colours[label], alpha=0.2)
        ax.set_title(f"{metric}: {task}")
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="y", useOffset=False)  # losses differ in the 4th digit
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=c, marker="o", markersize=3) for c in colours.values()]
    fig.legend(handles, list(colours), loc="outside upper center", ncol=min(len(colours), 6),
               fontsize=8)  # fmt: skip
    return _save(fig, path)


def plot_curves(
    curves: Mapping[str, Mapping[int, tuple[float, float]]], path: Path, title: str
) -> Path:
    """One panel: a line per label of (mean, std) by round, the std as a band."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    for i, (label, by_round) in enumerate(curves.items()):
        rounds = sorted(by_round)
        mean = np.array([by_round[r][0] for r in rounds])
        std = np.array([by_round[r][1] for r in rounds])
        ax.plot(rounds, mean, marker="o", markersize=3, color=f"C{i % 10}", label=label)
        ax.fill_between(rounds, mean - std, mean + std, color=f"C{i % 10}", alpha=0.2)
    ax.set_title(title)
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _heatmap(ax: plt.Axes, matrix: np.ndarray, clients: Sequence[str], title: str) -> None:
    image = ax.imshow(matrix, cmap="viridis", vmin=min(0.0, float(matrix.min())), vmax=1.0)
    ax.set_title(title)
    if len(clients) <= _ANNOTATE_MAX:
        ax.set_xticks(range(len(clients)), clients)
        ax.set_yticks(range(len(clients)), clients)
        for (i, j), value in np.ndenumerate(matrix):
            colour = "black" if value > 0.6 else "white"  # readable on viridis' yellow end
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xlabel("client")
    ax.set_ylabel("client")
    plt.colorbar(image, ax=ax, fraction=0.046)


def square_matrix(value: Any, size: int | None = None) -> np.ndarray | None:
    """``value`` as a float matrix if it is a non-empty square list of lists of numbers (of
    ``size`` rows when given), else None: a strategy log is data read back from disk."""
    if not isinstance(value, list) or not value or (size is not None and len(value) != size):
        return None
    rows = len(value)
    for row in value:
        if not isinstance(row, list) or len(row) != rows:
            return None
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in row):
            return None
    try:
        return np.asarray(value, dtype=float)
    except OverflowError:  # an int beyond any float
        return None


def last_similarity(run: RunResult) -> tuple[int, Mapping[str, Any]] | None:
    """``(round, similarity log)`` of the last round that logged a well-formed one: a square
    matrix, and client names of the same count (else their positions)."""
    for record in reversed(run.ok_records):
        similarity = strategy_log(record).get("similarity")
        if not isinstance(similarity, Mapping):
            continue
        matrix = square_matrix(similarity.get("matrix"))
        if matrix is None:
            continue
        clients = similarity.get("clients")
        if not isinstance(clients, list) or len(clients) != len(matrix):
            clients = list(range(len(matrix)))
        return record["round"], {**similarity, "matrix": matrix, "clients": clients}
    return None


def plot_similarity(run: RunResult, path: Path) -> Path | None:
    found = last_similarity(run)
    if found is None:
        return None
    server_round, log = found
    panels = [("similarity S", log["matrix"])]
    weights = square_matrix(log.get("weights"), len(log["matrix"]))
    if weights is not None:
        panels.append(("mixing weights W", weights))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5 * len(panels), 4.2), squeeze=False, layout="constrained"
    )
    clients = [str(c) for c in log["clients"]]
    for ax, (name, matrix) in zip(axes[0], panels, strict=True):
        _heatmap(ax, matrix, clients, name)
    fig.suptitle(f"{run.run_dir.name}: round {server_round}")
    return _save(fig, path)


def _assignment(value: Any) -> dict[str, int] | None:
    """A round's cluster assignment, client -> cluster index, if it is a non-empty JSON object
    of integers in [0, ``_MAX_CLUSTER``]; else None (the round is left out of the grid)."""
    if not isinstance(value, Mapping) or not value:
        return None
    ok = all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _MAX_CLUSTER
        for v in value.values()
    )
    return {str(k): v for k, v in value.items()} if ok else None


def cluster_grid(run: RunResult) -> tuple[list[int], list[str], np.ndarray] | None:
    """``(rounds, clients, grid)``: grid[i, j] = cluster of client j after round i, -1 unknown."""
    logged = [
        (r["round"], found)
        for r in run.ok_records
        if (found := _assignment(strategy_log(r).get("clusters"))) is not None
    ]
    if not logged:
        return None
    clients = sorted({c for _, a in logged for c in a}, key=lambda c: (len(c), c))
    grid = np.full((len(logged), len(clients)), -1, dtype=int)
    for i, (_, assignment) in enumerate(logged):
        for j, client in enumerate(clients):
            grid[i, j] = assignment.get(client, -1)
    return [r for r, _ in logged], clients, grid


def plot_clusters(run: RunResult, path: Path) -> Path | None:
    found = cluster_grid(run)
    if found is None:
        return None
    rounds, clients, grid = found
    masked = np.ma.masked_less(grid, 0)
    width = min(max(4.0, 0.35 * len(clients) + 2), 16.0)
    fig, ax = plt.subplots(figsize=(width, 1.4 + 0.4 * len(rounds)), layout="constrained")
    ax.imshow(
        masked,
        cmap="tab10",
        aspect="auto",
        interpolation="nearest",
        vmin=0,
        vmax=max(9, int(grid.max())),
    )
    ax.set_yticks(range(len(rounds)), [f"round {r}" for r in rounds])
    if len(clients) <= 40:
        ax.set_xticks(range(len(clients)), clients)
        for (i, j), value in np.ndenumerate(grid):
            if value >= 0:
                ax.text(j, i, str(value), ha="center", va="center", fontsize=8)
    ax.set_xlabel("client")
    ax.set_title(f"{run.run_dir.name}: cluster of each client")
    return _save(fig, path)
