"""Every registered strategy, 2 rounds end to end in Flower's simulation engine: 3 clients on
the tiny model. Flora runs with heterogeneous ranks and FedEx-LoRA without the personal part,
so both variants are exercised too. About a minute per strategy on 2 CPU cores."""

from __future__ import annotations

import pytest

from server.run_dir import read_metrics
from simulations.engine import simulate
from strategies.registry import STRATEGIES
from tests.e2e import ONE_WORKER, TINY_RUN

pytestmark = pytest.mark.slow

VARIANTS = {
    "flora": {"strategy.client-ranks": "8,4,2"},
    "fedex-lora": {"adapter.personal": "none"},
}


def _check_local_only(rounds):
    assert all(r["bytes_down"] == 0 and r["bytes_up"] == 0 for r in rounds)


def _check_centralized(rounds):
    for record in rounds:  # one trainer, 3 clients' worth of (1 sigma + 2 shared) steps
        assert [e["train-steps"] for e in record["train"]] == [9]
        assert set(record["eval_loss_by_task"]) == {"generation", "translation", "summarization"}


def _check_merged(increment_rank):
    def check(rounds):
        for record in rounds:
            assert record["strategy"]["merged_round"] == record["round"]
            assert record["strategy"]["merged_increment_rank"] == increment_rank
            assert {e["merge-round"] for e in record["train"]} == {record["round"] - 1}

    return check


def _check_similarity(rounds):
    for record in rounds:
        assert len(record["strategy"]["similarity"]["matrix"]) == 3


def _check_clustered(rounds):
    assert all(set(r["strategy"]["clusters"]) == {"0", "1", "2"} for r in rounds)


def _check_coba(rounds):
    assert all(abs(sum(r["strategy"]["coba_client_weights"].values()) - 1) < 1e-5 for r in rounds)


CHECKS = {
    "local-only": _check_local_only,
    "centralized": _check_centralized,
    "flora": _check_merged(8 + 4 + 2),  # stacked heterogeneous ranks
    "fedex-lora": _check_merged((3 + 1) * 8),  # [B_1 B_2 B_3 B_bar]
    "similarity-weighted": _check_similarity,
    "clustered": _check_clustered,
    "coba": _check_coba,
}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_runs_two_rounds_end_to_end(name, tmp_path, data_root):
    simulate(
        {
            **TINY_RUN,
            "output-dir": str(tmp_path),
            "run-name": name,
            "data.root": str(data_root),
            "strategy.name": name,
            **VARIANTS.get(name, {}),
        },
        num_supernodes=3,
        ray_init_args=ONE_WORKER,
    )
    rounds = read_metrics(tmp_path / name)
    assert [r["round"] for r in rounds] == [1, 2]
    assert not any(r.get("failed") or r["rejected"] for r in rounds)
    expected_clients = 1 if name == "centralized" else 3
    assert all(len(r["train"]) == expected_clients for r in rounds)
    CHECKS.get(name, lambda _: None)(rounds)
