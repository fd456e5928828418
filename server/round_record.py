"""The round record of ``metrics.jsonl``, read back: one JSON line per round.

``server.reports`` writes the records, :mod:`server.tensorboard`, the experiment harness
(``simulations``) and the reports read them with the functions here, so the server does not
depend on the harness (issue 15).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from colora.contract import EVAL_METRIC, weighted_mean


def read_records(path: Path) -> list[dict[str, Any]]:
    """Complete JSON lines of a ``metrics.jsonl`` (stops at a line still being written)."""
    if not Path(path).exists():
        return []
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def eval_metrics_by_task(record: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``{task: {metric: mean over clients}}`` of the ``eval.<task>.<metric>`` entries."""
    entries = record.get("eval", [])
    keys = sorted(
        {k for e in entries for k in e if k.startswith(EVAL_METRIC) and k.count(".") >= 2}
    )
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for key in keys:
        _, task, metric = key.split(".", 2)
        out[task][metric] = weighted_mean(entries, key, task)
    return dict(out)
