"""An in-process Grid that answers every message at once, for driving ``run_federation``.

Honest clients reply with what they were sent plus a fixed per-node offset (so every strategy's
aggregate is a known function of the replies) and the metrics a fedcolora client reports;
tests swap in a hostile reply for one node with ``hostile={node: make_reply}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict

from colora import contract as names
from colora.wire import to_numpy
from runconfig import parse_run_config
from server.federation import FederationResult, run_federation
from tests.conftest import pyproject_defaults
from tests.strategies.fakes import lora_state

NODES = (1, 2, 3)
TASKS = {1: "generation", 2: "translation", 3: "summarization"}
Reply = Callable[[Message], Message]


def train_metrics(node: int, n: int | None = None) -> dict:
    n = 10 + node if n is None else n
    return {
        names.CLIENT_ID: node - 1,
        names.NUM_EXAMPLES: n,
        names.TASK_EXAMPLES + TASKS[node]: n,
        names.TRAIN_LOSS: 1.0 / node,
        names.TRAIN_LOSS_TASK + TASKS[node]: 1.0 / node,
    }


def honest_arrays(message: Message) -> dict[str, np.ndarray]:
    node = message.metadata.dst_node_id
    sent = to_numpy(message.content["arrays"])
    return {k: (v + np.float32(0.01 * node)).astype(v.dtype) for k, v in sent.items()}


def train_content(message: Message, n: int | None = None) -> RecordDict:
    metrics = MetricRecord(train_metrics(message.metadata.dst_node_id, n))
    arrays = ArrayRecord(
        {k: Array(np.ascontiguousarray(v)) for k, v in honest_arrays(message).items()}
    )
    return RecordDict({"arrays": arrays, "metrics": metrics})


def honest_train(message: Message) -> Message:
    return Message(train_content(message), reply_to=message)


def honest_eval(message: Message) -> Message:
    node = message.metadata.dst_node_id
    metrics = {
        names.CLIENT_ID: node - 1,
        names.NUM_EXAMPLES: 4,
        names.EVAL_LOSS: 2.0 / node,
        names.EVAL_LOSS_TASK + TASKS[node]: 2.0 / node,
    }
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=message)


def honest_identify(message: Message) -> Message:
    """The client app's answer to ``query.identify``: the client this node hosts."""
    metrics = MetricRecord({names.CLIENT_ID: message.metadata.dst_node_id - 1})
    return Message(RecordDict({"metrics": metrics}), reply_to=message)


def crashed(message: Message) -> Message:
    return Message(Error(code=0, reason="RuntimeError: crashed"), reply_to=message)


class AnsweringGrid:
    """``get_node_ids`` and ``send_and_receive``: each message is answered by its node."""

    def __init__(
        self,
        train: Mapping[int, Reply] = {},
        evaluate: Mapping[int, Reply] = {},
        query: Mapping[int, Reply] = {},
    ):
        self.train, self.evaluate, self.query = dict(train), dict(evaluate), dict(query)
        self.asked: list[int] = []  # nodes sent an identify query

    def get_node_ids(self):
        return list(NODES)

    def send_and_receive(self, messages, timeout=None):
        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            if message.metadata.message_type.startswith("query"):
                self.asked.append(node)
                replies.append(self.query.get(node, honest_identify)(message))
            elif message.metadata.message_type.startswith("train"):
                replies.append(self.train.get(node, honest_train)(message))
            else:
                replies.append(self.evaluate.get(node, honest_eval)(message))
        return replies


def federate(tmp: Path, grid, *, run_name: str = "r", **overrides) -> FederationResult:
    """``run_federation`` on the fake grid with the pyproject defaults plus ``overrides``."""
    flat = {
        **pyproject_defaults(),
        "output-dir": str(tmp),
        "run-name": run_name,
        "num-server-rounds": 1,
        **overrides,
    }
    initial = lora_state(np.random.default_rng(0))
    return run_federation(grid, parse_run_config(flat), initial)


def assert_same_arrays(got: Mapping, want: Mapping, strategy: str) -> None:
    """Bit for bit: every strategy's aggregation is reproducible (issue 10)."""
    assert sorted(got) == sorted(want), strategy
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=f"{strategy}: {key}")
