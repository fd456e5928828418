"""The round loop, not each strategy, refuses to aggregate fewer than min-train-nodes replies.

Every strategy runs through the real loop (``run_federation``) on three nodes with
``strategy.min-train-nodes = 3`` while node 2 crashes: each round must be recorded as failed
with the reason, checkpointed, and the adapter must stay the initial one.
"""

from __future__ import annotations

import numpy as np
import pytest

from colora.wire import to_numpy
from server import run_dir as rundir
from strategies.registry import STRATEGIES
from tests.server.federation_fakes import AnsweringGrid, crashed, federate
from tests.strategies.fakes import lora_state, strategy

pytestmark = pytest.mark.usefixtures("server_task_identity")
AGGREGATING = sorted(set(STRATEGIES) - {"centralized"})  # centralized trains on one node
THREE = {"strategy.min-train-nodes": 3, "strategy.min-available-nodes": 3}


@pytest.mark.parametrize("name", AGGREGATING)
def test_fewer_replies_than_min_train_nodes_fail_the_round(tmp_path, name):
    grid = AnsweringGrid(train={2: crashed})
    result = federate(tmp_path, grid, **THREE, **{"strategy.name": name, "num-server-rounds": 2})
    lines = rundir.read_metrics(result.run_dir)
    assert [line["round"] for line in lines] == [1, 2]
    for line in lines:
        assert line["failed"] is True
        assert (
            "only 2 of 3 clients replied with a usable update (min-train-nodes = 3)"
            in (line["reason"])
        )
    assert rundir.load_checkpoint(result.run_dir).server_round == 2
    initial = lora_state(np.random.default_rng(0))
    for key, value in to_numpy(result.arrays).items():
        np.testing.assert_array_equal(value, initial[key], err_msg=key)


def test_every_strategy_needs_min_train_nodes_but_centralized_its_one_trainer():
    for name in STRATEGIES:
        built = strategy(name, **{"min-train-nodes": 3, "min-available-nodes": 3})
        assert built.min_replies == (1 if name == "centralized" else 3), name
