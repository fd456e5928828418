"""One send-and-receive of a round, with ``comm.*`` compression and honest byte counts.

The strategies build and read float32 messages. Here each message's ``arrays`` is swapped for
its encoded form just for the trip (``colora.compression``), and each reply's encoded update is
turned back into absolute float32 weights against what was sent to that node. A reply that does
not decode (a codec the server did not ask for, a wrong shape, a NaN or zero scale, unreadable
bytes) is rejected with its reason, like any other bad reply. ``bytes_down``/``bytes_up`` are
the serialised bytes of the encoded messages: what actually crossed the wire.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from flwr.app import Message
from flwr.serverapp import Grid

from colora.codec import CodecError
from colora.compression import ARRAYS, COMM_RECORD, Comm, decode_uplink, encode_downlink
from runconfig.schema import CommSettings
from server.screening import Rejection, pair_replies

log = logging.getLogger(__name__)


def message_bytes(message: Message) -> int:
    """Serialised bytes of every array in ``message`` (adapter and any merged term): what
    crosses the wire, .npy headers included. Never parses them: a reply may hold garbage."""
    if not message.has_content():
        return 0
    records = message.content.array_records.values()
    return sum(len(array.data) for record in records for array in record.values())


@dataclass
class Exchange:
    sent: list[Message]  # as the strategy built them (float32), with the grid's message ids
    replies: list[Message]  # decoded to absolute float32 weights
    rejected: list[Rejection] = field(default_factory=list)  # replies that did not decode
    bytes_down: int = 0
    bytes_up: dict[int, int] = field(default_factory=dict)  # id(reply) -> bytes on the wire

    def uploaded(self, replies: Iterable[Message]) -> int:
        return sum(self.bytes_up.get(id(reply), 0) for reply in replies)


def _decode(exchange: Exchange, comm: Comm) -> None:
    """Replace each reply's encoded update by absolute weights; reject what does not decode."""
    kept = []
    for sent, reply, node_id in pair_replies(exchange.sent, exchange.replies):
        if sent is None or reply.has_error() or ARRAYS not in reply.content.array_records:
            kept.append(reply)  # screening gives the reason
            continue
        try:
            reply.content[ARRAYS] = decode_uplink(
                reply.content[ARRAYS],
                reply.content.config_records.get(COMM_RECORD),
                sent.content[ARRAYS],
                comm,
            )
        except (CodecError, ValueError, TypeError, KeyError) as error:  # client content only
            reason = f"payload: {error}" if isinstance(error, CodecError) else repr(error)
            log.warning("Rejected the reply of node %s: %s", node_id, reason)
            exchange.rejected.append(Rejection(node_id, reason[:500]))
            continue
        kept.append(reply)
    exchange.replies = kept


def exchange(
    grid: Grid, messages: Iterable[Message], timeout: float, settings: CommSettings
) -> Exchange:
    """Send ``messages`` encoded as ``settings`` says, wait for the replies, decode them."""
    sent = list(messages)
    comm = Comm(settings.downlink, settings.uplink, settings.block_size)
    floats = [message.content for message in sent]
    cache: dict = {}
    for message in sent:
        message.content = encode_downlink(message.content, comm, cache)
    result = Exchange(sent, [], bytes_down=sum(message_bytes(m) for m in sent))
    try:
        result.replies = list(grid.send_and_receive(sent, timeout=timeout)) if sent else []
    finally:
        for message, content in zip(sent, floats, strict=True):
            message.content = content  # the grid has stamped the ids; strategies read floats
    result.bytes_up = {id(reply): message_bytes(reply) for reply in result.replies}
    if not comm.lossless:
        _decode(result, comm)
    return result
