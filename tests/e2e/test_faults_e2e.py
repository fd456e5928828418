"""A client that raises in the simulation engine: the round goes on without it.

Client 2 runs fedcolora's ClientApp wrapped to raise in every train round
(``faulty_client_app``). With ``min-train-nodes = 2`` each round aggregates the other two
clients, records client 2 as rejected with its error, and the run completes; with
``min-train-nodes = 3`` every round fails with a clear reason and the run still ends normally
with the adapter it had.
"""

from __future__ import annotations

import pytest

from server.run_dir import read_metrics
from simulations.engine import simulate
from tests.e2e import TINY_RUN, faulty_client_app

pytestmark = pytest.mark.slow


def _run(tmp_path, data_root, name, min_train_nodes):
    simulate(
        {
            **TINY_RUN,
            "output-dir": str(tmp_path),
            "run-name": name,
            "data.root": str(data_root),
            "strategy.min-train-nodes": min_train_nodes,
            # Flower waits for max(min-available, min-train) nodes anyway; the config must say so.
            "strategy.min-available-nodes": max(2, min_train_nodes),
        },
        num_supernodes=3,
        client_app=faulty_client_app.app,
    )
    return read_metrics(tmp_path / name)


def test_rounds_complete_without_the_client_that_raises(tmp_path, data_root):
    rounds = _run(tmp_path, data_root, "min2", 2)
    assert [r["round"] for r in rounds] == [1, 2]
    for record in rounds:
        assert not record.get("failed")
        assert sorted(e["client-id"] for e in record["train"]) == [0, 1]
        (rejected,) = record["rejected"]
        assert "client error" in rejected["reason"]
        assert "injected fault: client 2 crashed mid-round" in rejected["reason"]


def test_rounds_fail_clearly_when_too_few_clients_remain(tmp_path, data_root):
    rounds = _run(tmp_path, data_root, "min3", 3)
    assert [r["round"] for r in rounds] == [1, 2]
    for record in rounds:
        assert record["failed"] is True
        assert (
            "only 2 of 3 clients" in record["reason"] and "min-train-nodes = 3" in record["reason"]
        )
    assert (tmp_path / "min3" / "shared_adapter" / "adapter_config.json").is_file()
