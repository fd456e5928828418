"""Bytes per client-round on the wire for each ``comm.*`` codec, at the bundled adapter's size.

One FedAvg round through the real exchange (``server.wire_exchange``) and the real client mod
(``client.compression.codec_mod``): the server encodes SmolLM2-135M's shared adapter (LoRA r = 8
on q, k, v, o, gate, up, down: 2,442,240 values), each client decodes it, adds an update of the
size a round of local training makes, and uploads it as the codec says. Bytes are the
serialised arrays (.npy headers included), as ``metrics.jsonl`` reports them; ``max_rel_error``
is the largest |decoded − sent| / max|sent| of the uploaded update, per tensor.

    .venv/bin/python benchmarks/codec_bytes.py

Prints one JSON line per (downlink, uplink) pair.
"""

from __future__ import annotations

import json
import uuid

import numpy as np
from aggregation_speed import random_state, set_task_identity, smollm2_shapes
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from client.compression import codec_mod
from colora.wire import to_numpy, to_record
from runconfig.schema import CODECS, CommSettings
from server.wire_exchange import exchange

CLIENTS = 2
UPDATE_SCALE = 1e-3  # one round of local training moves A and B by about this much


class LoopbackGrid:
    """Hands each message to ``codec_mod`` around a client that adds a fixed update."""

    def __init__(self, updates: dict[str, np.ndarray]) -> None:
        self.updates = updates

    def _train(self, msg: Message, context: Context) -> Message:
        received = to_numpy(msg.content["arrays"])
        trained = {k: v + self.updates[k] for k, v in received.items()}
        metrics = MetricRecord({"client-id": msg.metadata.dst_node_id, "num-examples": 1})
        content = RecordDict({"arrays": to_record(trained), "metrics": metrics})
        return Message(content, reply_to=msg)

    def send_and_receive(self, messages, timeout):
        replies = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            copy = Message(
                RecordDict(dict(message.content.items())), dst_node_id=1, message_type="train"
            )
            copy.metadata.__dict__["_message_id"] = message.metadata.message_id
            replies.append(codec_mod(copy, Context(1, 1, {}, RecordDict(), {}), self._train))
        return replies


def measure(downlink: str, uplink: str, block: int = 128) -> dict:
    rng = np.random.default_rng(0)
    shapes = smollm2_shapes()
    state = random_state(shapes, rng)
    updates = random_state(shapes, rng, scale=UPDATE_SCALE)
    record = to_record(state)
    messages = [
        Message(
            RecordDict({"arrays": record, "config": ConfigRecord({"server-round": 1})}),
            dst_node_id=node,
            message_type="train",
        )
        for node in range(1, CLIENTS + 1)
    ]
    result = exchange(LoopbackGrid(updates), messages, 60, CommSettings(uplink, downlink, block))
    got = to_numpy(result.replies[0].content["arrays"])
    errors = [
        float(np.max(np.abs(got[k] - state[k] - updates[k])) / np.max(np.abs(updates[k])))
        for k in state
    ]
    return {
        "bench": "codec_bytes",
        "downlink": downlink,
        "uplink": uplink,
        "block": block,
        "values": int(sum(v.size for v in state.values())),
        "bytes_down_per_client": result.bytes_down // CLIENTS,
        "bytes_up_per_client": result.uploaded(result.replies) // CLIENTS,
        "max_rel_error_up": max(errors),
        "rejected": len(result.rejected),
    }


def main() -> None:
    set_task_identity()
    for codec in CODECS:
        print(json.dumps(measure(codec, codec)), flush=True)
    print(json.dumps(measure("int8", "int8", block=64)), flush=True)
    print(json.dumps(measure("bf16", "int8")), flush=True)


if __name__ == "__main__":
    main()
