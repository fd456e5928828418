"""One ``metrics.jsonl`` record per round, and its human-readable log lines.

Per client: train loss per task, first and last step loss, examples, seconds. Per task:
example-weighted train and eval loss. Plus bytes down and up, wall time, rejections, the
local-DP (ε, δ) spent when clients report it, and whatever the strategy logs (similarity
matrices, clusters, CoBa weights).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from flwr.app import Message

from colora.contract import (
    CLIENT_ID,
    DP_DELTA,
    DP_DELTA_SPENT,
    DP_EPSILON,
    DP_EPSILON_SPENT,
    EVAL_LOSS_TASK,
    TRAIN_LOSS_FIRST,
    TRAIN_LOSS_LAST,
    TRAIN_LOSS_TASK,
    TRAIN_SECONDS,
    task_means,
)
from server.round_record import RoundRecord

log = logging.getLogger(__name__)


def _metrics(message: Message) -> dict[str, Any]:
    return dict(message.content["metrics"])


def round_record(
    server_round: int,
    *,
    seconds: float,
    train_replies: Sequence[Message],
    rejected: Sequence,
    eval_replies: Sequence[Message],
    bytes_down: int,
    bytes_up: int,
    strategy: Mapping[str, Any],
    central_dp: Mapping[str, Any] | None = None,
) -> RoundRecord:
    # Replies are screened (colora.contract): client-id is present and an integer.
    train = sorted((_metrics(m) for m in train_replies), key=lambda m: m[CLIENT_ID])
    evals = sorted(
        (_metrics(m) for m in eval_replies if not m.has_error()), key=lambda m: m[CLIENT_ID]
    )
    return RoundRecord(
        round=server_round,
        seconds=round(seconds, 3),
        bytes_down=bytes_down,
        bytes_up=bytes_up,
        train=train,
        eval=evals,
        train_loss_by_task=task_means(train, TRAIN_LOSS_TASK),
        eval_loss_by_task=task_means(evals, EVAL_LOSS_TASK),
        rejected=rejections(rejected),
        privacy=_privacy(train),
        central_dp=dict(central_dp) if central_dp is not None else None,
        strategy=dict(strategy),
    )


def failed_record(server_round: int, *, seconds: float, reason: str, rejected: Sequence):
    """The record of a round that could not aggregate (the previous adapter is kept)."""
    return RoundRecord(
        round=server_round,
        seconds=round(seconds, 3),
        failed=True,
        reason=reason,
        rejected=rejections(rejected),
    )


def rejections(rejected: Sequence) -> list[dict[str, Any]]:
    return [{"node_id": r.node_id, "reason": r.reason} for r in rejected]


def _privacy(train: Sequence[Mapping[str, Any]]) -> dict[str, float] | None:
    """The local-DP spend of the round: per-round (ε, δ) and the most any client has spent."""
    names = {
        "epsilon_round": DP_EPSILON,
        "delta_round": DP_DELTA,
        "epsilon_spent_max": DP_EPSILON_SPENT,
        "delta_spent_max": DP_DELTA_SPENT,
    }
    spends = [e for e in train if all(name in e for name in names.values())]
    if not spends:
        return None
    return {out: max(e[name] for e in spends) for out, name in names.items()}


def log_round(record: RoundRecord) -> None:
    log.info(
        "Round %d done in %.1f s | down %.2f MB, up %.2f MB | %d clients, %d rejected",
        record.round,
        record.seconds,
        record.bytes_down / 1e6,
        record.bytes_up / 1e6,
        len(record.train),
        len(record.rejected),
    )
    for entry in record.train:
        tasks = {
            k.removeprefix(TRAIN_LOSS_TASK): round(v, 4)
            for k, v in entry.items()
            if k.startswith(TRAIN_LOSS_TASK)
        }
        log.info(
            "  client %s: train loss %.4f -> %.4f %s (%.1f s)",
            entry[CLIENT_ID],
            entry.get(TRAIN_LOSS_FIRST, math.nan),
            entry.get(TRAIN_LOSS_LAST, math.nan),
            tasks,
            entry.get(TRAIN_SECONDS, math.nan),
        )
    if privacy := record.privacy:
        log.info(
            "  local DP: (ε, δ) = (%.3g, %.1e) this round; at most (%.3g, %.1e) spent by a client",
            privacy["epsilon_round"],
            privacy["delta_round"],
            privacy["epsilon_spent_max"],
            privacy["delta_spent_max"],
        )
    log.info(
        "  eval loss by task: %s", {k: round(v, 4) for k, v in record.eval_loss_by_task.items()}
    )
