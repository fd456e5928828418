"""Compressed payloads in Flower messages, both directions (``comm.*`` config).

The server's strategies and the client's training only ever see float32 arrays; compression
happens at the edge of the wire and is undone at the other end:

- **Down** (server → client): the ``arrays`` record of each train and evaluate message is
  encoded with ``comm.downlink``; a ``comm`` ConfigRecord says how. The client decodes it
  (:func:`decode_downlink`) and trains from what it decoded.
- **Up** (client → server): the client sends its *update*, trained − decoded, encoded with
  ``comm.uplink`` (:func:`encode_uplink`). The server adds the decoded update to the float32
  arrays it sent that node (:func:`decode_uplink`), so quantisation error never accumulates in
  the server's copy of the adapter, and a reply still reaches the strategies as absolute
  weights.

An fp32 uplink sends the weights themselves; with fp32 both ways messages are exactly as
without compression (no ``comm`` record).
Decoding a reply is strict: a codec the server did not ask for, a missing, extra or misshapen
key, an unreadable array or a NaN, Inf or zero scale raises :class:`CodecError`, which the
server turns into a rejected reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from colora.codec import SCALE_SUFFIX, CodecError, decode, encode

COMM_RECORD = "comm"  # ConfigRecord in a message: how its "arrays" travel
ARRAYS = "arrays"
_DOWN, _UP, _BLOCK = "downlink", "uplink", "block"


@dataclass(frozen=True)
class Comm:
    """The codecs of both directions, as the server announces them in every message."""

    downlink: str
    uplink: str
    block: int

    @property
    def lossless(self) -> bool:
        return self.downlink == self.uplink == "fp32"

    def record(self) -> ConfigRecord:
        return ConfigRecord({_DOWN: self.downlink, _UP: self.uplink, _BLOCK: self.block})

    def uplink_record(self) -> ConfigRecord:
        """What a reply declares: the codec and block its update was encoded with."""
        return ConfigRecord({_UP: self.uplink, _BLOCK: self.block})

    @classmethod
    def from_record(cls, record: ConfigRecord | None) -> Comm | None:
        """The codecs a message announces, or None when it announces none (plain float32)."""
        if record is None:
            return None
        down, up, block = record.get(_DOWN), record.get(_UP), record.get(_BLOCK)
        valid = isinstance(down, str) and isinstance(up, str) and type(block) is int
        if not valid or block < 1:
            raise CodecError(f"'{COMM_RECORD}' record is malformed: {dict(record)!r:.200}")
        return cls(down, up, block)


def _numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The record's arrays; anything np.load refuses (garbage, truncated, pickled object arrays,
    another stype) becomes a CodecError naming the key."""
    out = {}
    for key, array in record.items():
        try:
            out[key] = array.numpy()
        except Exception as error:  # any parse failure is the sender's fault
            raise CodecError(f"'{key}' is not a readable array: {error}"[:300]) from None
    return out


def _record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({key: Array(np.ascontiguousarray(value)) for key, value in arrays.items()})


def encode_downlink(content: RecordDict, comm: Comm, cache: dict) -> RecordDict:
    """A copy of ``content`` whose ``arrays`` travel as ``comm.downlink`` and which announces
    ``comm``; ``cache`` (keyed by the record's id) encodes a record shared by many messages
    once. Unchanged when every codec is fp32."""
    if comm.lossless or ARRAYS not in content.array_records:
        return content
    record = content[ARRAYS]
    if id(record) not in cache:
        cache[id(record)] = _record(encode(_numpy(record), comm.downlink, comm.block))
    items = {key: value for key, value in content.items() if key != ARRAYS}
    return RecordDict({**items, ARRAYS: cache[id(record)], COMM_RECORD: comm.record()})


def decode_downlink(
    content: RecordDict,
) -> tuple[RecordDict, Mapping[str, np.ndarray] | None, Comm | None]:
    """The float32 ``content`` a client trains on, the arrays it decoded and the codecs the
    server announced (None, None when it announced none)."""
    comm = Comm.from_record(content.config_records.get(COMM_RECORD))
    if comm is None:
        return content, None, None
    wire_arrays = _numpy(content[ARRAYS])
    shapes = {k: v.shape for k, v in wire_arrays.items() if not k.endswith(SCALE_SUFFIX)}
    received = decode(wire_arrays, shapes, comm.downlink, comm.block)
    items = {k: v for k, v in content.items() if k not in (ARRAYS, COMM_RECORD)}
    return RecordDict({**items, ARRAYS: _record(received)}), received, comm


def encode_uplink(
    record: ArrayRecord, received: Mapping[str, np.ndarray], comm: Comm
) -> tuple[ArrayRecord, ConfigRecord]:
    """A reply's arrays as ``comm.uplink`` sends them, and the record that declares it: the
    update trained − ``received`` for a lossy codec, the weights themselves for fp32."""
    trained = _numpy(record)
    if comm.uplink != "fp32":
        trained = {key: trained[key] - received[key] for key in trained}
    return _record(encode(trained, comm.uplink, comm.block)), comm.uplink_record()


def decode_uplink(
    record: ArrayRecord, declared: ConfigRecord | None, sent: ArrayRecord, comm: Comm
) -> ArrayRecord:
    """The absolute float32 arrays of a reply (``sent`` + its decoded update, for a lossy
    uplink). Raises CodecError when the reply declares another codec than the server asked
    for, or its payload does not decode to exactly the shapes that were sent."""
    if declared is None or dict(declared) != dict(comm.uplink_record()):
        got = dict(declared) if declared is not None else None
        raise CodecError(f"reply declares {got!r:.120}; the server asked for {comm.uplink!r}")
    reference = _numpy(sent)
    shapes = {key: value.shape for key, value in reference.items()}
    decoded = decode(_numpy(record), shapes, comm.uplink, comm.block)
    if comm.uplink == "fp32":
        return _record(decoded)
    return _record({key: reference[key] + decoded[key] for key in reference})
