"""``run_summary.json``: wall time and peak memory of one run, per round and per attempt.

Written by the experiment runner after every round and when the run's process exits, so an
interrupted run keeps what was measured. A resumed run adds an attempt: the run's wall time is
the sum over attempts, its peak memory the maximum, and the rounds re-run after the checkpoint
replace the ones measured before. Peak memory is of the whole process tree (run process and
Ray workers; see ``simulations.monitor``); each round's peak covers the time since the
previous round line (round 1 includes start-up: Ray, model and data loading).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from codetasks.data.jsonl import read_json_object
from simulations.monitor import MemorySampler, Peak
from simulations.results import SUMMARY_FILE

_GIB = 1024**3

log = logging.getLogger(__name__)


def _previous(run_dir: Path, resumed_after: int) -> tuple[list[dict], list[dict]]:
    """The rounds up to the checkpoint and the attempts of the summary being resumed. One
    that cannot be read is moved aside (``.damaged``) and the run's timing starts afresh:
    it is bookkeeping, and must not stop a run from resuming."""
    path = run_dir / SUMMARY_FILE
    if not resumed_after or not path.exists():
        return [], []
    try:
        old = read_json_object(path)
        rounds = [dict(r) for r in old.get("rounds", []) if int(r["round"]) <= resumed_after]
        attempts = [dict(a) for a in old.get("attempts", [])]
    except (OSError, ValueError, KeyError, TypeError) as error:  # DataError is a ValueError
        aside = path.with_name(f"{SUMMARY_FILE}.damaged")
        path.replace(aside)
        log.warning("%s unreadable (%r); moved to %s, timing starts afresh", path, error, aside)
        return [], []
    return rounds, attempts


def start(
    run_dir: Path, payload: Mapping[str, Any], resumed_after: int, host: Mapping[str, Any]
) -> dict[str, Any]:
    """A new attempt's summary, keeping the earlier attempts of a resumed run."""
    rounds, attempts = _previous(run_dir, resumed_after)
    attempts.append(
        {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "resumed_after_round": resumed_after,
            "returncode": None,
        }
    )
    return {
        "label": payload["label"],
        "seed": payload["seed"],
        "status": "running",
        "resources": {
            k: payload[k]
            for k in ("num_supernodes", "cpus_per_client", "gpus_per_client", "ray_init_args")
        },
        "host": dict(host),
        "rounds": rounds,
        "attempts": attempts,
    }


def add_round(summary: dict[str, Any], line: Mapping[str, Any], peak: Peak, elapsed: float) -> None:
    number = int(line["round"])
    summary["rounds"] = [r for r in summary["rounds"] if r["round"] != number]
    summary["rounds"].append(
        {
            "round": number,
            "failed": bool(line.get("failed", False)),
            "seconds": line.get("seconds"),
            "elapsed_seconds": round(elapsed, 3),  # since this attempt's process started
            "attempt": len(summary["attempts"]),
            **peak.as_dict(),
        }
    )
    summary["rounds"].sort(key=lambda r: r["round"])


def finish(
    summary: dict[str, Any], returncode: int | None, wall: float, sampler: MemorySampler
) -> None:
    attempt = summary["attempts"][-1]
    attempt.update(
        {
            "returncode": returncode,
            "wall_seconds": round(wall, 3),
            "max_processes": sampler.max_processes,
            **sampler.total.as_dict(),
        }
    )
    summary["status"] = {0: "completed", None: "interrupted"}.get(returncode, "failed")
    done = [a for a in summary["attempts"] if a.get("wall_seconds") is not None]
    summary["wall_seconds"] = round(sum(a["wall_seconds"] for a in done), 3)
    for key in ("peak_rss_bytes", "peak_pss_bytes"):
        summary[key] = max((a.get(key, 0) for a in done), default=0)


def write(run_dir: Path, summary: Mapping[str, Any]) -> None:
    tmp = run_dir / f".{SUMMARY_FILE}.tmp"
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    tmp.replace(run_dir / SUMMARY_FILE)


def one_line(run_dir: Path, returncode: int) -> str:
    """What the runner prints when a run ends."""
    data = json.loads((run_dir / SUMMARY_FILE).read_text())
    status = data["status"] if returncode == 0 else f"FAILED (exit {returncode}, see run.log)"
    return (
        f"{run_dir.name}: {status}, {len(data['rounds'])} rounds, "
        f"{data.get('wall_seconds', 0):.1f} s, peak RSS "
        f"{data.get('peak_rss_bytes', 0) / _GIB:.2f} GiB (PSS "
        f"{data.get('peak_pss_bytes', 0) / _GIB:.2f} GiB)"
    )
