"""Privacy options end to end in Flower's simulation engine (3 clients, tiny model, 2 rounds):
SecAgg+ with and without client-side DP, and the refusal of SecAgg+ where a strategy needs
individual updates."""

from __future__ import annotations

import pytest

from runconfig.fields import ConfigError
from server.central_dp import calibrate_noise_multiplier
from server.run_dir import read_metrics
from simulations.engine import simulate
from tests.e2e import ONE_WORKER, TINY_RUN

pytestmark = pytest.mark.slow

BASE = {**TINY_RUN, "strategy.min-train-nodes": 3, "strategy.min-available-nodes": 3}


def _run(tmp_path, data_root, name, **overrides):
    simulate(
        BASE
        | {"output-dir": str(tmp_path), "run-name": name, "data.root": str(data_root)}
        | overrides,
        num_supernodes=3,
        ray_init_args=ONE_WORKER,
    )
    return read_metrics(tmp_path / name)


def test_secure_aggregation_with_local_dp_trains_and_reports_the_spend(tmp_path, data_root):
    rounds = _run(
        tmp_path,
        data_root,
        "secagg-dp",
        **{
            "privacy.secure-aggregation": True,
            "privacy.dp-mode": "local",
            "privacy.dp-clip-norm": 0.05,
            "privacy.dp-epsilon": 0.5,
            "strategy.name": "fedprox",
        },
    )
    assert [r["round"] for r in rounds] == [1, 2]
    assert not any(r.get("failed") or r["rejected"] for r in rounds)
    for record in rounds:
        assert sorted(e["client-id"] for e in record["train"]) == [0, 1, 2]
        spent = {e["dp-epsilon-spent"] for e in record["train"]}
        assert spent == {0.5 * record["round"]}  # basic composition over the rounds taken part
        assert all(e["dp-noise-std"] > 0 for e in record["train"])
    # Every client started round 2 from the same securely aggregated adapter.
    assert len({e["shared-in-fingerprint"] for e in rounds[1]["train"]}) == 1
    assert (
        rounds[1]["train"][0]["shared-in-fingerprint"]
        != rounds[0]["train"][0]["shared-in-fingerprint"]
    )


def test_secure_aggregation_is_refused_for_similarity_weighted(tmp_path, data_root):
    with pytest.raises(ConfigError) as err:
        _run(
            tmp_path,
            data_root,
            "refused",
            **{"privacy.secure-aggregation": True, "strategy.name": "similarity-weighted"},
        )
    message = str(err.value)
    assert "cannot be combined with strategy.name = 'similarity-weighted'" in message
    assert "needs each update in the clear" in message
    assert not (tmp_path / "refused" / "metrics.jsonl").exists()  # refused before round 1


def test_central_dp_under_secure_aggregation_adds_noise_once_and_accounts_it(tmp_path, data_root):
    rounds = _run(
        tmp_path,
        data_root,
        "central-dp",
        **{
            "privacy.secure-aggregation": True,
            "privacy.dp-mode": "central",
            "privacy.dp-clip-norm": 0.05,
            "privacy.dp-target-epsilon": 8.0,
        },
    )
    assert [r["round"] for r in rounds] == [1, 2]
    assert not any(r.get("failed") or r["rejected"] for r in rounds)
    z = calibrate_noise_multiplier(8.0, 1e-5, 2)
    spent = []
    for record in rounds:
        dp = record["central_dp"]
        assert sorted(e["client-id"] for e in record["train"]) == [0, 1, 2]
        assert dp["noise_multiplier"] == pytest.approx(z)
        assert dp["noise_std"] == pytest.approx(z * 0.05 / 3)  # once, on the mean of 3
        assert dp["releases"] == record["round"]
        assert not any(k.startswith("dp-") for e in record["train"] for k in e)  # no local DP
        spent.append(dp["epsilon_spent"])
    assert spent[0] < spent[1] <= 8.0
    assert spent[1] == pytest.approx(8.0, abs=1e-3)  # calibrated to the whole run's budget


def test_central_dp_is_refused_without_secure_aggregation(tmp_path, data_root):
    with pytest.raises(ConfigError, match=r"privacy\.dp-mode = 'central'.*secure-aggregation"):
        _run(
            tmp_path,
            data_root,
            "refused-central",
            **{"privacy.dp-mode": "central", "privacy.dp-clip-norm": 0.05},
        )
