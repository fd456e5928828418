"""One reply must never stop a run (issue 14, section 1).

Each hostile reply in ``tests.server.hostile`` is sent by node 2 through the real round loop
(``run_federation``). The run must finish every round with a metrics line and a checkpoint,
record node 2's rejection with a reason, and end on exactly the adapter it reaches when node 2
crashes instead (the aggregate of the valid replies alone).
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from colora.wire import to_numpy
from server import run_dir as rundir
from strategies.fedavg import FedAvg
from tests.server import hostile
from tests.server.federation_fakes import AnsweringGrid, crashed, federate
from tests.strategies.fakes import lora_state

pytestmark = pytest.mark.usefixtures("server_task_identity")
BAD_NODE = 2


def assert_same_adapter(result, expected) -> None:
    got, want = to_numpy(result.arrays), to_numpy(expected.arrays)
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def assert_survived(
    result, rounds: int, rejected_node: int | None = BAD_NODE, failed: bool = False
) -> list[dict]:
    """Every round has its metrics line (``failed`` or not) and a checkpoint, and each line
    records ``rejected_node``'s rejection with a reason."""
    lines = rundir.read_metrics(result.run_dir)
    assert [line["round"] for line in lines] == list(range(1, rounds + 1))
    assert [bool(line.get("failed")) for line in lines] == [failed] * rounds
    ckpt = rundir.load_checkpoint(result.run_dir)
    assert ckpt is not None and ckpt.server_round == rounds
    if rejected_node is not None:
        for line in lines:
            reasons = [r["reason"] for r in line["rejected"] if r["node_id"] == rejected_node]
            assert reasons and all(reasons), line["rejected"]
    return lines


@pytest.mark.parametrize("strategy", ["fedavg", "coba"])
@pytest.mark.parametrize("case", sorted(hostile.TRAIN))
def test_a_hostile_train_reply_is_rejected_and_the_round_goes_on(tmp_path, strategy, case):
    settings = {"strategy.name": strategy, "num-server-rounds": 2}
    bad = federate(tmp_path, AnsweringGrid(train={BAD_NODE: hostile.TRAIN[case]}), **settings)
    good = federate(tmp_path, AnsweringGrid(train={BAD_NODE: crashed}), run_name="g", **settings)
    assert_survived(bad, rounds=2)
    assert_same_adapter(bad, good)


@pytest.mark.parametrize("strategy", ["coba", "fedavg"])
@pytest.mark.parametrize("case", sorted(hostile.EVAL))
def test_a_hostile_evaluate_reply_is_rejected_and_the_run_goes_on(tmp_path, strategy, case):
    settings = {"strategy.name": strategy, "num-server-rounds": 3}
    bad = federate(tmp_path, AnsweringGrid(evaluate={BAD_NODE: hostile.EVAL[case]}), **settings)
    good = federate(tmp_path, AnsweringGrid(evaluate={BAD_NODE: crashed}), run_name="g", **settings)
    lines = assert_survived(bad, rounds=3)
    assert all(BAD_NODE - 1 not in [e["client-id"] for e in line["eval"]] for line in lines)
    assert_same_adapter(bad, good)
    if strategy == "coba":  # the history holds only the valid clients' losses, all finite
        history = lines[-1]["strategy"]["coba_history"]
        assert history and all(np.isfinite(v).all() for v in history.values())


def test_a_raising_aggregation_fails_only_its_round(tmp_path, monkeypatch, caplog):
    calls = []
    original = FedAvg.aggregate_train

    def flaky(self, server_round, replies):
        calls.append(server_round)
        if server_round == 1:
            raise ZeroDivisionError("boom")
        return original(self, server_round, replies)

    monkeypatch.setattr(FedAvg, "aggregate_train", flaky)
    result = federate(tmp_path, AnsweringGrid(), **{"num-server-rounds": 2})
    lines = rundir.read_metrics(result.run_dir)
    assert calls == [1, 2]
    assert lines[0]["failed"] and "ZeroDivisionError('boom')" in lines[0]["reason"]
    assert not lines[1].get("failed")
    assert rundir.load_checkpoint(result.run_dir).server_round == 2


def test_a_non_finite_aggregate_is_refused_and_the_previous_adapter_kept(tmp_path, monkeypatch):
    def poisoned(self, server_round, replies):
        state = to_numpy(replies[0].content["arrays"])
        return ArrayRecord({k: Array(np.full_like(v, np.nan)) for k, v in state.items()}), None

    monkeypatch.setattr(FedAvg, "aggregate_train", poisoned)
    result = federate(tmp_path, AnsweringGrid())
    (line,) = rundir.read_metrics(result.run_dir)
    assert line["failed"] and "NaN or Inf" in line["reason"]
    ckpt = rundir.load_checkpoint(result.run_dir)
    assert ckpt.server_round == 1
    initial = lora_state(np.random.default_rng(0))  # what federate starts from
    for key, value in initial.items():
        np.testing.assert_array_equal(ckpt.arrays[key], value)
        np.testing.assert_array_equal(to_numpy(result.arrays)[key], value)
