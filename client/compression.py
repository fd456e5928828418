"""The client's side of ``comm.*`` compression, as a ClientApp mod (``colora.compression``).

Outermost, so every other mod and the handler see float32 arrays: it decodes the adapter the
server sent, and encodes the reply's arrays (a lossy uplink sends the update against what was
decoded) after local DP has clipped and noised them. Encoding after DP is post-processing and
keeps DP's guarantee.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable

from colora.compression import ARRAYS, COMM_RECORD, decode_downlink, encode_uplink


def codec_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    content, received, comm = decode_downlink(msg.content)
    if comm is None:
        return call_next(msg, context)
    msg.content = content
    reply = call_next(msg, context)
    if reply.has_error() or ARRAYS not in reply.content.array_records:
        return reply  # evaluate replies carry metrics only
    reply.content[ARRAYS], reply.content[COMM_RECORD] = encode_uplink(
        reply.content[ARRAYS], received, comm
    )
    return reply
