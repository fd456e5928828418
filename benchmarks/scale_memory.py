"""Scale check: time and process-tree memory per round of a many-client simulation.

Runs an experiment file (default ``simulations/scale1000.toml``: 1000 clients, 50 sampled per
round, 10 rounds of the tiny model; ``simulations/scale100.toml`` is the 100-client check) with
the experiment runner. Its first run executes in a fresh subprocess whose process tree (the
server, Ray's GCS, raylet and workers) is sampled once a second (``simulations.monitor``).
Prints one JSON line per round: the server's round time, the time since the run process
started, and the peak RSS and PSS of the whole tree during that round; then a last line with
issue 13's target, round 10's peak RSS at most 1.1x round 2's, and the tables. Memory that
stays flat across rounds means per-client state lives on disk, not in the simulation.

    .venv/bin/python benchmarks/scale_memory.py [--experiment simulations/scale100.toml]
        [--output-root /tmp/scale] [--fresh]
    .venv/bin/python benchmarks/scale_memory.py --print-only   # a finished run's lines
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from simulations.experiment import load_experiment

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = REPO / "simulations" / "scale1000.toml"
GIB = 1024**3
FLAT = 1.1  # issue 13: the last round's peak RSS at most 1.1x round 2's


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TIME = r"(?P<t>\d\d:\d\d:\d\d)"
_LINES = {  # the log lines of server.federation, server.reports and client.rounds
    "start": re.compile(_TIME + r" \[ROUND (?P<r>\d+)/"),
    "done": re.compile(_TIME + r" Round (?P<r>\d+) done in"),
    "train": re.compile(_TIME + r" \[client \d+ \|[^]]*\] round (?P<r>\d+) \w+ step"),
}


def _seconds(hms: str) -> int:
    h, m, s = map(int, hms.split(":"))
    return 3600 * h + 60 * m + s


def phase_breakdown(run_log: Path) -> dict[int, dict[str, float]]:
    """Per round, from the log's timestamps (1 s resolution): seconds training (round start to
    the last local step) and evaluating (last step to round end)."""
    seen: dict[int, dict[str, list[int]]] = {}
    for line in _ANSI.sub("", run_log.read_text(errors="replace")).splitlines():
        for kind, pattern in _LINES.items():
            if match := pattern.search(line):
                times = seen.setdefault(int(match["r"]), {}).setdefault(kind, [])
                times.append(_seconds(match["t"]))
    out = {}
    for rnd, times in sorted(seen.items()):
        if {"start", "done", "train"} <= times.keys():
            start, done, last_step = times["start"][-1], times["done"][-1], max(times["train"])
            out[rnd] = {"train_s": last_step - start, "eval_s": done - last_step}
    return out


def print_phases(run_dir: Path) -> None:
    phases = phase_breakdown(run_dir / "run.log")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = {r["round"]: r for r in map(json.loads, lines)}
    print("round | train phase s | eval phase s | clients trained | clients evaluated")
    for rnd, p in phases.items():
        record = records.get(rnd, {})
        trained, evaluated = len(record.get("train", [])), len(record.get("eval", []))
        cells = f"{p['train_s']:>13} | {p['eval_s']:>12} | {trained:>15} | {evaluated:>17}"
        print(f"{rnd:>5} | {cells}")


def print_json_lines(run_dir: Path, experiment: str) -> None:
    """One line per round, then the flatness check of issue 13."""
    summary = json.loads((run_dir / "run_summary.json").read_text())
    rounds = summary["rounds"]
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = {r["round"]: r for r in map(json.loads, lines)}
    for r in rounds:
        record = records.get(r["round"], {})
        line = {
            "experiment": experiment,
            "round": r["round"],
            "seconds": round(r["seconds"], 2),
            "clients_trained": len(record.get("train", [])),
            "failed": record.get("reason") if record.get("failed") else None,
            "elapsed_seconds": round(r["elapsed_seconds"], 1),
            "peak_tree_rss_bytes": r["peak_rss_bytes"],
            "peak_tree_pss_bytes": r["peak_pss_bytes"],
        }
        print(json.dumps(line), flush=True)
    if len(rounds) >= 2:
        second, last = rounds[1], rounds[-1]
        ratio = last["peak_rss_bytes"] / second["peak_rss_bytes"]
        check = {
            "experiment": experiment,
            "check": f"peak RSS round {last['round']} / round {second['round']}",
            "ratio": round(ratio, 3),
            "pss_ratio": round(last["peak_pss_bytes"] / second["peak_pss_bytes"], 3),
            "target": FLAT,
            "met": ratio <= FLAT,
            "max_processes": summary["attempts"][-1].get("max_processes"),
            "wall_seconds": round(summary.get("wall_seconds", float("nan")), 1),
        }
        print(json.dumps(check), flush=True)


def print_table(run_dir: Path) -> None:
    summary = json.loads((run_dir / "run_summary.json").read_text())
    print(f"run: {run_dir}  status: {summary['status']}")
    print(f"host: {summary['host']['cpus']} CPUs, {summary['host']['memory_bytes'] / GIB:.1f} GiB")
    print("round | round s (server) | elapsed s | peak RSS GiB | peak PSS GiB")
    for r in summary["rounds"]:
        print(
            f"{r['round']:>5} | {r['seconds']:>16.1f} | {r['elapsed_seconds']:>9.1f} | "
            f"{r['peak_rss_bytes'] / GIB:>12.2f} | {r['peak_pss_bytes'] / GIB:>12.2f}"
        )
    later = [r["peak_pss_bytes"] for r in summary["rounds"][1:]]
    if later:
        spread = (max(later) - min(later)) / GIB
        print(f"peak PSS spread over rounds 2..: {spread:.2f} GiB")
    print(
        f"total wall {summary.get('wall_seconds', float('nan')):.1f} s, peak RSS "
        f"{summary.get('peak_rss_bytes', 0) / GIB:.2f} GiB, peak PSS "
        f"{summary.get('peak_pss_bytes', 0) / GIB:.2f} GiB, "
        f"max processes {summary['attempts'][-1].get('max_processes')}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", type=Path, default=EXPERIMENT)
    parser.add_argument("--output-root", type=Path, default=REPO / "experiments")
    parser.add_argument("--fresh", action="store_true", help="delete a previous run first")
    parser.add_argument("--print-only", action="store_true", help="print a finished run's lines")
    args = parser.parse_args()
    output_root = args.output_root.resolve()
    experiment = load_experiment(args.experiment.resolve())
    run_dir = experiment.runs(output_root)[0].run_dir
    if args.fresh:
        shutil.rmtree(experiment.directory(output_root), ignore_errors=True)
    if not args.print_only:
        command = [sys.executable, "-m", "simulations", "run", str(args.experiment.resolve())]
        code = subprocess.call([*command, "--output-root", str(output_root)], cwd=REPO)
        if code != 0:
            print(f"the run failed (exit {code}); see {run_dir}/run.log")
    print_json_lines(run_dir, experiment.settings.name)
    print_table(run_dir)
    print_phases(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
