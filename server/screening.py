"""Screen client replies before any strategy sees them.

A reply is rejected, with a logged reason, if it carries an error (a crashed client), lacks
its arrays or metrics, reports a non-positive example count, or if its arrays do not match
what was sent to that node: a missing or extra key, a wrong shape or dtype, NaN or Inf, or
a payload larger than what was sent. When the server announced heterogeneous ranks
(``client-ranks``), LoRA factors of a smaller rank are accepted (HetLoRA). Screening here,
once, means no strategy can aggregate a bad update by forgetting to check.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from flwr.app import Message

from colora.wire import payload_bytes, to_numpy
from strategies.maths.validation import check_rank_compatible, check_update
from strategies.protocol import CLIENT_RANKS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejection:
    node_id: int
    reason: str


def _reason(sent: Message | None, reply: Message) -> str | None:
    if reply.has_error():
        return f"client error: {reply.error.reason}"
    if sent is None:
        return "reply to a message this round did not send"
    content = reply.content
    if "arrays" not in content.array_records or "metrics" not in content.metric_records:
        return "reply lacks 'arrays' or 'metrics'"
    num_examples = content["metrics"].get("num-examples")
    if not isinstance(num_examples, int | float) or not num_examples > 0:
        return f"num-examples must be a positive number, got {num_examples!r}"
    reference = sent.content["arrays"]
    config = sent.content.config_records.get("config")
    check = (
        check_rank_compatible if config is not None and config.get(CLIENT_RANKS) else check_update
    )
    return check(
        to_numpy(content["arrays"]), to_numpy(reference), max_bytes=payload_bytes(reference)
    )


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


def screen_replies(
    sent: Sequence[Message], replies: Sequence[Message]
) -> tuple[list[Message], list[Rejection]]:
    """Split ``replies`` into accepted messages and logged rejections."""
    accepted, rejected = [], []
    for sent_msg, reply, node_id in pair_replies(sent, replies):
        reason = _reason(sent_msg, reply)
        if reason is None:
            accepted.append(reply)
        else:
            log.warning("Rejected the reply of node %s: %s", node_id, reason)
            rejected.append(Rejection(node_id, reason))
    return accepted, rejected
