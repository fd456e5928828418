"""SecAgg+ inside the round loop, over a loopback grid that runs the client mods in-process.

The server must end with global + the example-weighted mean update, as plain FedAvg would,
while never holding an individual update: what the clients upload is masked.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from client.privacy import local_dp_mod, secagg_mod
from colora.wire import to_numpy, to_record
from runconfig.schema import parse_run_config
from server.central_dp import CentralDp
from server.secure_aggregation import secure_round
from tests.conftest import pyproject_defaults
from tests.strategies.fakes import FakeGrid, lora_state, strategy

pytestmark = pytest.mark.usefixtures("server_task_identity")

N_EXAMPLES = {1: 10, 2: 30, 3: 60}


class LoopbackGrid(FakeGrid):
    """Delivers each message to an in-process ClientApp train chain: secagg -> local DP ->
    ``train``; records every upload the server receives."""

    def __init__(self, train, run_config) -> None:
        super().__init__(N_EXAMPLES)
        self.train = train
        self.contexts = {
            nid: Context(
                run_id=0,
                node_id=nid,
                node_config={"partition-id": nid - 1, "num-partitions": 3},
                state=RecordDict(),
                run_config=run_config,
            )
            for nid in N_EXAMPLES
        }
        self.uploads: list[RecordDict] = []

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for sent in messages:
            message = copy.deepcopy(sent)  # as on the wire: nodes never share one object
            message.metadata.__dict__["_message_id"] = f"m{len(self.uploads)}"
            ctxt = self.contexts[message.metadata.dst_node_id]
            reply = secagg_mod(message, ctxt, lambda m, c: local_dp_mod(m, c, self.train))
            reply.metadata.__dict__["_src_node_id"] = message.metadata.dst_node_id
            self.uploads.append(reply.content)
            replies.append(reply)
        return replies


def _deltas(state):
    rng = np.random.default_rng(7)
    return {
        nid: {k: (1e-3 * rng.normal(size=v.shape)).astype(np.float32) for k, v in state.items()}
        for nid in N_EXAMPLES
    }


def _train_with(deltas):
    def train(msg: Message, ctxt: Context) -> Message:
        nid = msg.metadata.dst_node_id
        sent = to_numpy(msg.content["arrays"])
        arrays = {k: sent[k] + deltas[nid][k] for k in sent}
        metrics = {"num-examples": N_EXAMPLES[nid], "client-id": nid - 1, "train-loss": 1.0}
        content = RecordDict({"arrays": to_record(arrays), "metrics": MetricRecord(metrics)})
        return Message(content=content, reply_to=msg)

    return train


@pytest.fixture
def run_config(tmp_path):
    return pyproject_defaults() | {"output-dir": str(tmp_path), "privacy.secure-aggregation": True}


def test_secagg_round_yields_the_fedavg_aggregate_without_seeing_updates(run_config):
    cfg = parse_run_config(run_config)
    state = lora_state(np.random.default_rng(0), scale=0.05)
    deltas = _deltas(state)
    grid = LoopbackGrid(_train_with(deltas), run_config)
    fedavg = strategy("fedavg", **{})
    messages = fedavg.configure_train(1, to_record(state), ConfigRecord(), grid)

    sent, replies, rejected = secure_round(grid, messages, 1, cfg.privacy, timeout=60)

    assert len(sent) == 3 and len(replies) == 3 and not rejected
    new, _ = fedavg.aggregate_train(1, replies)
    weights = np.array([N_EXAMPLES[n] for n in N_EXAMPLES], dtype=np.float64)
    for key, value in to_numpy(new).items():
        weighted = (w * deltas[n][key] for w, n in zip(weights, N_EXAMPLES, strict=True))
        mean = sum(weighted) / weights.sum()
        np.testing.assert_allclose(value, state[key] + mean, atol=2e-7)
    assert sorted(r.content["metrics"]["client-id"] for r in replies) == [0, 1, 2]
    # Nothing the server received holds a client's update or weights in the clear.
    stages = [u for u in grid.uploads if RECORD_KEY_CONFIGS in u.config_records]
    assert len(stages) == 4 * 3  # setup, share keys, masked vectors, unmask
    assert all(len(a) == 0 for u in grid.uploads for a in u.array_records.values())


def test_a_client_that_fails_mid_protocol_still_leaves_an_aggregate(run_config):
    cfg = parse_run_config(run_config)
    state = lora_state(np.random.default_rng(1), scale=0.05)
    deltas = _deltas(state)
    honest = _train_with(deltas)

    def flaky(msg, ctxt):
        if msg.metadata.dst_node_id == 3:
            raise RuntimeError("client 3 crashed while training")
        return honest(msg, ctxt)

    class Dropping(LoopbackGrid):
        def send_and_receive(self, messages, *, timeout=None):
            out = []
            for message in messages:
                with contextlib.suppress(RuntimeError):  # the node never answers
                    out += super().send_and_receive([message], timeout=timeout)
            return out

    grid = Dropping(flaky, run_config)
    fedavg = strategy("fedavg")
    messages = fedavg.configure_train(1, to_record(state), ConfigRecord(), grid)
    _, replies, _ = secure_round(grid, messages, 1, cfg.privacy, timeout=60)

    assert sorted(r.content["metrics"]["client-id"] for r in replies) == [0, 1]
    new, _ = fedavg.aggregate_train(1, replies)
    key = next(iter(state))
    w1, w2 = N_EXAMPLES[1], N_EXAMPLES[2]
    mean = (w1 * deltas[1][key] + w2 * deltas[2][key]) / (w1 + w2)
    np.testing.assert_allclose(to_numpy(new)[key], state[key] + mean, atol=2e-7)


def test_central_dp_clients_clip_and_upload_with_equal_weight(run_config):
    """Under central DP the secure mean is the *unweighted* mean of updates clipped by Flower's
    fixedclipping_mod; the server's noise (server.central_dp) comes on top of it."""
    clip = 0.003
    run_config = run_config | {
        "privacy.dp-mode": "central",
        "privacy.dp-clip-norm": clip,
        "privacy.dp-noise-multiplier": 1.0,
    }
    cfg = parse_run_config(run_config)
    state = lora_state(np.random.default_rng(2), scale=0.05)
    deltas = _deltas(state)
    grid = LoopbackGrid(_train_with(deltas), run_config)
    fedavg = strategy("fedavg")
    central = CentralDp(fedavg, cfg)
    messages = central.configure_train(1, to_record(state), ConfigRecord(), grid)

    _, replies, rejected = secure_round(grid, messages, 1, cfg.privacy, timeout=60)

    assert len(replies) == 3 and not rejected
    norms = {
        n: np.sqrt(sum(np.sum(d.astype(np.float64) ** 2) for d in deltas[n].values()))
        for n in deltas
    }
    assert min(norms.values()) > 2 * clip  # every update is clipped
    clipped = {n: {k: v * clip / norms[n] for k, v in deltas[n].items()} for n in deltas}
    new, _ = fedavg.aggregate_train(1, replies)  # the noise-free aggregate under the wrapper
    for key, value in to_numpy(new).items():
        mean = sum(clipped[n][key] for n in clipped) / 3  # equal weights, not 10:30:60
        np.testing.assert_allclose(value, state[key] + mean, atol=2e-7)
    # The reports still carry each client's example count.
    assert sorted(r.content["metrics"]["num-examples"] for r in replies) == [10, 30, 60]
