"""One ``metrics.jsonl`` record per round, and its human-readable log lines.

Per client: train loss per task, first and last step loss, examples, seconds. Per task:
example-weighted train and eval loss. Plus bytes down and up, wall time, rejections, the
local-DP (ε, δ) spent when clients report it, and whatever the strategy logs (similarity
matrices, clusters, CoBa weights).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from flwr.app import Message

log = logging.getLogger(__name__)


def _metrics(message: Message) -> dict[str, Any]:
    return dict(message.content["metrics"])


def _per_task(entries: Sequence[Mapping[str, Any]], prefix: str) -> dict[str, float]:
    """Example-weighted mean of ``<prefix>.<task>`` over clients."""
    sums: dict[str, float] = defaultdict(float)
    weights: dict[str, float] = defaultdict(float)
    for entry in entries:
        for key, value in entry.items():
            if key.startswith(prefix + "."):
                task = key[len(prefix) + 1 :]
                weight = entry.get(f"num-examples.{task}", entry.get("num-examples", 1))
                sums[task] += weight * value
                weights[task] += weight
    return {task: sums[task] / weights[task] for task in sorted(sums)}


def round_record(
    server_round: int,
    *,
    seconds: float,
    train_replies: Sequence[Message],
    rejected: Sequence,
    eval_replies: Sequence[Message],
    bytes_down: int,
    bytes_up: int,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    train = sorted((_metrics(m) for m in train_replies), key=lambda m: m["client-id"])
    evals = sorted(
        (_metrics(m) for m in eval_replies if not m.has_error()), key=lambda m: m["client-id"]
    )
    return {
        "round": server_round,
        "seconds": round(seconds, 3),
        "bytes_down": bytes_down,
        "bytes_up": bytes_up,
        "train": train,
        "eval": evals,
        "train_loss_by_task": _per_task(train, "train-loss"),
        "eval_loss_by_task": _per_task(evals, "eval-loss"),
        "rejected": [{"node_id": r.node_id, "reason": r.reason} for r in rejected],
        **_privacy(train),
        **extra,
    }


def _privacy(train: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The local-DP spend of the round: per-round (ε, δ) and the most any client has spent."""
    spends = [e for e in train if "dp-epsilon" in e]
    if not spends:
        return {}
    return {
        "privacy": {
            "epsilon_round": max(e["dp-epsilon"] for e in spends),
            "delta_round": max(e["dp-delta"] for e in spends),
            "epsilon_spent_max": max(e["dp-epsilon-spent"] for e in spends),
            "delta_spent_max": max(e["dp-delta-spent"] for e in spends),
        }
    }


def log_round(record: Mapping[str, Any]) -> None:
    log.info(
        "Round %d done in %.1f s | down %.2f MB, up %.2f MB | %d clients, %d rejected",
        record["round"],
        record["seconds"],
        record["bytes_down"] / 1e6,
        record["bytes_up"] / 1e6,
        len(record["train"]),
        len(record["rejected"]),
    )
    for entry in record["train"]:
        tasks = {
            k.split(".", 1)[1]: round(v, 4) for k, v in entry.items() if k.startswith("train-loss.")
        }
        log.info(
            "  client %s: train loss %.4f -> %.4f %s (%.1f s)",
            entry["client-id"],
            entry["train-loss-first"],
            entry["train-loss-last"],
            tasks,
            entry["train-seconds"],
        )
    if privacy := record.get("privacy"):
        log.info(
            "  local DP: (ε, δ) = (%.3g, %.1e) this round; at most (%.3g, %.1e) spent by a client",
            privacy["epsilon_round"],
            privacy["delta_round"],
            privacy["epsilon_spent_max"],
            privacy["delta_spent_max"],
        )
    log.info(
        "  eval loss by task: %s", {k: round(v, 4) for k, v in record["eval_loss_by_task"].items()}
    )
