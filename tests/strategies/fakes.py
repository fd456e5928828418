"""Hand-built Flower messages for strategy component tests: a grid, LoRA states, replies.

A round is driven exactly as ``server.federation`` does it: ``configure_train`` against a
:class:`FakeGrid`, one reply per sent message built with ``Message(content, reply_to=sent)``,
then ``aggregate_train``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from colora.wire import to_numpy, to_record
from runconfig.schema import RunConfig, parse_run_config
from strategies.registry import build_strategy

State = dict[str, np.ndarray]
LAYERS = (
    "base_model.model.model.layers.0.self_attn.q_proj",
    "base_model.model.model.layers.0.mlp.down_proj",
)
D_OUT, D_IN, RANK = 5, 6, 3


class FakeGrid:
    """The one Grid method Flower's sampling calls."""

    def __init__(self, node_ids) -> None:
        self.node_ids = list(node_ids)

    def get_node_ids(self):
        return list(self.node_ids)


def lora_state(rng: np.random.Generator, rank: int = RANK, scale: float = 1.0) -> State:
    """PEFT-style keys: A is rank x d_in, B is d_out x rank, float32."""
    state = {}
    for layer in LAYERS:
        state[f"{layer}.lora_A.weight"] = (scale * rng.normal(size=(rank, D_IN))).astype(np.float32)
        state[f"{layer}.lora_B.weight"] = (scale * rng.normal(size=(D_OUT, rank))).astype(
            np.float32
        )
    return state


def strategy(name: str, **params):
    """Build a strategy through the registry, as the server does."""
    flat = {"strategy.name": name, **{f"strategy.{k}": v for k, v in params.items()}}
    cfg: RunConfig = parse_run_config(flat)
    return build_strategy(cfg)


def reply(sent: Message, arrays: Mapping[str, np.ndarray], metrics: Mapping) -> Message:
    content = RecordDict({"arrays": to_record(arrays), "metrics": MetricRecord(dict(metrics))})
    return Message(content=content, reply_to=sent)


def sent_state(message: Message) -> State:
    return to_numpy(message.content["arrays"])


Update = Callable[[Message], tuple[Mapping[str, np.ndarray], Mapping]]


def train_round(
    strategy_, server_round: int, arrays: ArrayRecord | Mapping, grid: FakeGrid, update: Update
):
    """configure_train -> one reply per message from ``update(sent)`` -> aggregate_train."""
    record = arrays if isinstance(arrays, ArrayRecord) else to_record(arrays)
    sent = list(strategy_.configure_train(server_round, record, ConfigRecord(), grid))
    replies = [reply(m, *update(m)) for m in sent]
    new, _ = strategy_.aggregate_train(server_round, replies)
    return sent, replies, new


def metrics(client: int, n: int = 10, **extra) -> dict:
    return {"client-id": client, "num-examples": n, **extra}
