"""Four clients share one GPU through fractional Ray resources (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from server.run_dir import read_metrics
from simulations.engine import simulate

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_four_clients_train_on_one_gpu(tmp_path, data_root):
    simulate(
        {
            "model.source": "tiny",
            "output-dir": str(tmp_path),
            "run-name": "gpu",
            "num-server-rounds": 2,
            "data.root": str(data_root),
            "data.partition": "iid",
            "train.max-train-examples": 16,
            "train.eval-examples": 2,
            "train.batch-size": 2,
            "eval.every": 0,
            "strategy.min-train-nodes": 4,
            "strategy.min-available-nodes": 4,
        },
        num_supernodes=4,
        gpus_per_client=0.25,
        ray_init_args={"num_gpus": 1},
    )
    rounds = read_metrics(tmp_path / "gpu")
    assert [r["round"] for r in rounds] == [1, 2]
    for record in rounds:
        assert sorted(e["client-id"] for e in record["train"]) == [0, 1, 2, 3]
        assert all(e["train-on-gpu"] == 1 for e in record["train"])
