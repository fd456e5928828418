"""A round's exchange with ``comm.*`` codecs: the client mod and the server, in process.

A grid hands each message to the real ``client.compression.codec_mod`` around a fake handler
that trains by adding a known update, so the server's reconstruction can be checked against
the exact answer; hostile replies are built by hand and must be rejected, never raised.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import numpy as np
import pytest
from flwr.app import Array, ConfigRecord, Context, Message, MetricRecord, RecordDict

from client.compression import codec_mod
from colora.codec import SCALE_SUFFIX, roundtrip
from colora.compression import COMM_RECORD, Comm
from colora.wire import to_numpy, to_record
from runconfig.schema import CommSettings
from server.screening import screen_replies
from server.wire_exchange import exchange
from tests.strategies.fakes import lora_state

pytestmark = pytest.mark.usefixtures("server_task_identity")


def _update(state):
    """A fixed float32 update of at most 3e-3 per coordinate."""
    return {
        k: (1e-3 * (1 + np.arange(v.size) % 3)).astype(np.float32).reshape(v.shape)
        for k, v in state.items()
    }


def _train(msg: Message, context: Context) -> Message:
    """A client that adds a fixed update to what it received."""
    received = to_numpy(msg.content["arrays"])
    trained = {k: v + _update(received)[k] for k, v in received.items()}
    metrics = MetricRecord({"client-id": msg.metadata.dst_node_id, "num-examples": 4})
    return Message(RecordDict({"arrays": to_record(trained), "metrics": metrics}), reply_to=msg)


class ClientGrid:
    """send_and_receive through ``codec_mod`` and a handler; ``tamper`` edits a reply."""

    def __init__(self, tamper: Callable[[Message], None] | None = None) -> None:
        self.tamper, self.seen = tamper, []

    def send_and_receive(self, messages, timeout):
        replies = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            self.seen.append(message.content)
            # The client gets its own copy, as over the network.
            inbound = Message(
                RecordDict(dict(message.content.items())),
                dst_node_id=message.metadata.dst_node_id,
                message_type="train",
            )
            inbound.metadata.__dict__["_message_id"] = message.metadata.message_id
            reply = codec_mod(inbound, Context(1, 1, {}, RecordDict(), {}), _train)
            if self.tamper is not None:
                self.tamper(reply)
            replies.append(reply)
        return replies


def _messages(global_state, nodes=(1, 2)):
    record = to_record(global_state)
    return [
        Message(
            RecordDict({"arrays": record, "config": ConfigRecord({"server-round": 1})}),
            dst_node_id=node,
            message_type="train",
        )
        for node in nodes
    ]


@pytest.fixture
def global_state():
    return lora_state(np.random.default_rng(0))


@pytest.mark.parametrize(
    ("down", "up"), [("bf16", "int8"), ("int8", "int8"), ("int8", "fp32"), ("fp32", "bf16")]
)
def test_replies_are_rebuilt_against_the_float32_that_was_sent(global_state, down, up):
    comm = CommSettings(uplink=up, downlink=down, block_size=4)
    result = exchange(ClientGrid(), _messages(global_state), 60, comm)
    accepted, rejected = screen_replies(result.sent, result.replies)
    assert len(accepted) == 2 and not rejected and not result.rejected
    # The strategies get float32 messages back, with the grid's ids stamped on them.
    assert all(
        m.metadata.message_id and "comm" not in m.content.config_records for m in result.sent
    )
    for reply in accepted:
        got = to_numpy(reply.content["arrays"])
        for key, value in global_state.items():
            # The client trained from the decoded downlink. A lossy uplink sends the update,
            # which the server adds to its own float32 copy; fp32 sends the weights themselves.
            start = value if up != "fp32" else _lossy(value, down)
            update = _update(global_state)[key]  # at most 3e-3: int8 and bf16 err by <= 1.2e-5
            np.testing.assert_allclose(got[key], start + update, rtol=0, atol=2e-5)


def _lossy(x, codec):
    return roundtrip({"k": x}, codec, 4)["k"]


def _npy(array: np.ndarray) -> int:
    return len(Array(array).data)  # the tensor bytes plus the .npy header


def test_bytes_are_what_crossed_the_wire(global_state):
    plain = exchange(ClientGrid(), _messages(global_state), 60, CommSettings())
    fp32 = sum(_npy(v) for v in global_state.values())
    assert plain.bytes_down == 2 * fp32 and plain.uploaded(plain.replies) == 2 * fp32
    packed = exchange(ClientGrid(), _messages(global_state), 60, CommSettings("int8", "bf16", 4))
    bf16 = sum(_npy(v.astype(np.uint16)) for v in global_state.values())
    int8 = sum(
        _npy(v.astype(np.int8)) + _npy(np.zeros(-(-v.size // 4), np.float32))
        for v in global_state.values()
    )
    assert packed.bytes_down == 2 * bf16 and packed.uploaded(packed.replies) == 2 * int8
    assert bf16 < fp32  # (int8 pays a header per scale array: tiny tensors gain nothing)


def _set_scale(reply, value):
    key = next(k for k in reply.content["arrays"] if k.endswith(SCALE_SUFFIX))
    scale = reply.content["arrays"][key].numpy().copy()
    scale[0] = value
    reply.content["arrays"][key] = Array(scale)


def _declare(reply, **record):
    reply.content[COMM_RECORD] = ConfigRecord(record)


def _garbage(reply):
    key = next(iter(reply.content["arrays"]))
    array = reply.content["arrays"][key]
    reply.content["arrays"][key] = Array(
        array.dtype, array.shape, array.stype, b"\x93NUMPY garbage"
    )


def _reshape(reply):
    key = next(k for k in reply.content["arrays"] if not k.endswith(SCALE_SUFFIX))
    reply.content["arrays"][key] = Array(np.zeros((1, 1), np.int8))


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda r: _set_scale(r, np.nan), "NaN, Inf or zero scale"),
        (lambda r: _set_scale(r, 0.0), "NaN, Inf or zero scale"),
        (lambda r: _declare(r, uplink="bf16", block=4), "the server asked for 'int8'"),
        (lambda r: _declare(r, uplink="int8", block=8), "the server asked for 'int8'"),
        (lambda r: r.content.config_records.pop(COMM_RECORD), "declares None"),
        (_reshape, "payload must be int8"),
        (_garbage, "not a readable array"),
    ],
)
def test_a_bad_compressed_reply_is_rejected_and_the_other_kept(global_state, tamper, reason):
    first = []

    def tamper_first(reply):
        if not first:
            first.append(reply)
            tamper(reply)

    comm = CommSettings(uplink="int8", downlink="bf16", block_size=4)
    result = exchange(ClientGrid(tamper_first), _messages(global_state), 60, comm)
    assert len(result.rejected) == 1 and reason in result.rejected[0].reason
    assert result.rejected[0].node_id == 1
    accepted, rejected = screen_replies(result.sent, result.replies)
    assert [r.metadata.dst_node_id or r.metadata.src_node_id for r in accepted] and not rejected
    assert len(accepted) == 1


def test_a_malformed_comm_record_from_the_server_is_a_client_error(global_state):
    message = _messages(global_state, nodes=(1,))[0]
    message.content[COMM_RECORD] = ConfigRecord({"downlink": "int8", "uplink": "int8", "block": 0})
    with pytest.raises(ValueError, match="malformed"):
        codec_mod(message, Context(1, 1, {}, RecordDict(), {}), _train)


def test_lossless_settings_send_the_messages_untouched(global_state):
    grid = ClientGrid()
    exchange(grid, _messages(global_state), 60, CommSettings())
    assert all(COMM_RECORD not in content.config_records for content in grid.seen)
    assert Comm("fp32", "fp32", 64).lossless
