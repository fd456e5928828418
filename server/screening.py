"""Screen client replies before any strategy sees them.

Every train and evaluate reply is parsed once into the typed contract
(``colora.contract``: types, finiteness, ranges, required metrics, arrays decoded without
pickle). A train reply is further rejected if its arrays do not match what was sent to that
node (a missing or extra key, a wrong shape or dtype, NaN or Inf, a payload larger than what
was sent) or if its example counts exceed what the configuration lets a client load; when the
server announced heterogeneous ranks (``client-ranks``), LoRA factors of a smaller rank are
accepted (HetLoRA). Every rejection is logged with its reason and the round goes on.

An accepted reply's content is replaced by its canonical form: the validated arrays and only
the validated metrics, with the example counts capped so that no client holds more than
``strategy.max-client-share`` of the weight (``server.weights``). Screening here, once, means
no strategy can aggregate a bad update, or trust a bad number, by forgetting to check.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from codetasks.examples import TASK_NAMES
from colora import contract
from colora.contract import CLIENT_RANKS, ReplyError, TrainReply
from colora.wire import payload_bytes
from server.weights import capped_weights, count_reason
from strategies.maths.validation import check_rank_compatible, check_update

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejection:
    node_id: int
    reason: str


@dataclass(frozen=True)
class WeightLimits:
    """``train.max-train-examples`` (0 = none), ``strategy.max-client-share``,
    ``train.eval-examples`` (0 = none), which bounds an evaluate reply's count per task, and
    ``data.tasks``, the only tasks a reply's per-task metrics may name."""

    max_task_examples: int = 0
    max_share: float = 1.0
    max_eval_examples: int = 0
    tasks: tuple[str, ...] = TASK_NAMES


def _task_reason(metrics: Mapping[str, object], tasks: tuple[str, ...]) -> str | None:
    """Why a reply's per-task metrics name a task the run does not have. Invented tasks would
    add lines to every report and, on evaluation, raise the example count the reply may claim
    (its bound is per task)."""
    for name in sorted(metrics):
        task = contract.metric_task(name)
        if task is not None and task not in tasks:
            return (
                f"metric '{name}' names task {task!r}, not one of data.tasks ({', '.join(tasks)})"
            )
    return None


def _check_layout(sent: Message, parsed: TrainReply) -> str | None:
    reference_record = sent.content["arrays"]
    reference = contract.decode_record(reference_record)
    config = sent.content.config_records.get("config")
    check = (
        check_rank_compatible if config is not None and config.get(CLIENT_RANKS) else check_update
    )
    return check(parsed.arrays, reference, max_bytes=payload_bytes(reference_record))


def _parse_train(sent: Message | None, reply: Message, limits: WeightLimits) -> TrainReply:
    """The reply as a :class:`TrainReply`, or :class:`ReplyError` with the reason."""
    if reply.has_error():
        raise ReplyError(f"client error: {reply.error.reason}")
    if sent is None:
        raise ReplyError("reply to a message this round did not send")
    parsed = contract.parse_train(reply)
    reason = (
        _task_reason(parsed.metrics, limits.tasks)
        or count_reason(
            parsed.num_examples, parsed.task_examples, limits.max_task_examples, len(limits.tasks)
        )
        or _check_layout(sent, parsed)
    )
    if reason is not None:
        raise ReplyError(reason)
    return parsed


def pair_replies(
    sent: Sequence[Message], replies: Sequence[Message]
) -> list[tuple[Message | None, Message, int]]:
    """(the message each reply answers or None, the reply, the node id) for every reply."""
    by_id = {m.metadata.message_id: m for m in sent if m.metadata.message_id}
    by_node = {message.metadata.dst_node_id: message for message in sent}
    pairs = []
    for reply in replies:
        # Error replies made by the SuperLink for a dead node carry the SuperLink as source;
        # the message they answer names the node.
        sent_msg = by_id.get(reply.metadata.reply_to_message_id or None)
        if sent_msg is None:
            sent_msg = by_node.get(reply.metadata.src_node_id)
        node_id = sent_msg.metadata.dst_node_id if sent_msg else reply.metadata.src_node_id
        pairs.append((sent_msg, reply, node_id))
    return pairs


def _split(sent, replies, parse):
    """(accepted (message, parsed) pairs, rejections), logging each rejection."""
    accepted, rejected = [], []
    for sent_msg, reply, node_id in pair_replies(sent, replies):
        try:
            accepted.append((reply, parse(sent_msg, reply)))
        except (ReplyError, ValueError, TypeError, KeyError) as error:
            reason = str(error) if isinstance(error, ReplyError) else f"malformed reply: {error!r}"
            log.warning("Rejected the reply of node %s: %s", node_id, reason)
            rejected.append(Rejection(node_id, reason))
    return accepted, rejected


def _capped_metrics(
    parsed: TrainReply | contract.EvalReply, weight: float
) -> dict[str, int | float]:
    metrics = dict(parsed.metrics)
    if weight < parsed.num_examples:
        scale = weight / parsed.num_examples
        metrics[contract.NUM_EXAMPLES] = weight
        for task, count in getattr(parsed, "task_examples", {}).items():
            metrics[contract.TASK_EXAMPLES + task] = count * scale
        log.warning(
            "Capped the weight of client %s from %g to %g examples (strategy.max-client-share)",
            parsed.client_id,
            parsed.num_examples,
            weight,
        )
    return metrics


def screen_replies(
    sent: Sequence[Message], replies: Sequence[Message], limits: WeightLimits = WeightLimits()
) -> tuple[list[Message], list[Rejection]]:
    """Split train ``replies`` into accepted canonical messages and logged rejections."""
    pairs, rejected = _split(sent, replies, lambda s, r: _parse_train(s, r, limits))
    weights = capped_weights([p.num_examples for _, p in pairs], limits.max_share)
    accepted = []
    for (reply, parsed), weight in zip(pairs, weights, strict=True):
        arrays = reply.content.array_records["arrays"]
        metrics = MetricRecord(_capped_metrics(parsed, float(weight)))
        reply.content = RecordDict(
            {"arrays": ArrayRecord(dict(arrays.items())), "metrics": metrics}
        )
        accepted.append(reply)
    return accepted, rejected


def _parse_evaluate(
    sent: Message | None, reply: Message, limits: WeightLimits
) -> contract.EvalReply:
    if sent is None and not reply.has_error():
        raise ReplyError("reply to a message this round did not send")
    parsed = contract.parse_evaluate(reply)
    reason = _task_reason(parsed.metrics, limits.tasks)
    if reason is not None:
        raise ReplyError(reason)
    most = limits.max_eval_examples * max(len(parsed.eval_losses), 1)
    if limits.max_eval_examples > 0 and parsed.num_examples > most:
        raise ReplyError(
            f"metric 'num-examples' = {parsed.num_examples:g} exceeds train.eval-examples = "
            f"{limits.max_eval_examples} for each of its {len(parsed.eval_losses)} task(s)"
        )
    return parsed


def screen_evaluations(
    sent: Sequence[Message], replies: Sequence[Message], limits: WeightLimits = WeightLimits()
) -> tuple[list[Message], list[Rejection]]:
    """Split evaluate ``replies`` into accepted canonical messages (validated metrics only)
    and logged rejections. Example counts are bounded and capped as for train replies: CoBa
    weights each task's validation loss by them."""
    pairs, rejected = _split(sent, replies, lambda s, r: _parse_evaluate(s, r, limits))
    weights = capped_weights([p.num_examples for _, p in pairs], limits.max_share)
    for (reply, parsed), weight in zip(pairs, weights, strict=True):
        metrics = MetricRecord(_capped_metrics(parsed, float(weight)))
        reply.content = RecordDict({"metrics": metrics})
    return [reply for reply, _ in pairs], rejected
