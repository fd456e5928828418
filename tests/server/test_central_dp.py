"""Central DP under SecAgg+: the noise the server adds, the (ε, δ) accounting, the config.

Accounting is checked against the closed form the RDP accountant implements: the Gaussian
mechanism with noise multiplier z has Rényi DP α/(2z²) at order α (Mironov 2017, Prop. 7),
T releases compose to T·α/(2z²), and (ε, δ) follows from Canonne, Kamath & Steinke 2020
(https://arxiv.org/abs/2004.00010, Prop. 12):
ε = min_α T·α/(2z²) + log((α-1)/α) - (log δ + log α)/(α-1).
"""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from flwr.app import ConfigRecord
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM
from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

from colora.wire import to_numpy, to_record
from runconfig.fields import ConfigError
from runconfig.schema import parse_run_config
from server.central_dp import (
    POPULATION,
    CentralDp,
    build_central_dp,
    calibrate_noise_multiplier,
)
from strategies.registry import build_strategy
from tests.conftest import pyproject_defaults
from tests.strategies.fakes import FakeGrid, metrics, reply

pytestmark = pytest.mark.usefixtures("server_task_identity")

CENTRAL = {
    "privacy.dp-mode": "central",
    "privacy.secure-aggregation": True,
    "privacy.dp-clip-norm": 0.5,
    "privacy.dp-noise-multiplier": 1.0,
}


def _cfg(**overrides):
    return parse_run_config(pyproject_defaults() | CENTRAL | overrides)


def _closed_form_epsilon(z: float, releases: int, delta: float, orders) -> float:
    a = np.asarray([o for o in orders if o > 1], dtype=np.float64)
    eps = releases * a / (2 * z**2) + np.log((a - 1) / a) - (math.log(delta) + np.log(a)) / (a - 1)
    return float(max(eps.min(), 0.0))


@pytest.mark.parametrize(("z", "releases"), [(0.5, 1), (1.0, 3), (2.0, 10), (0.9018, 2)])
def test_accounting_matches_the_rdp_closed_form(z, releases):
    dp = CentralDp(build_strategy(_cfg()), _cfg(**{"privacy.dp-noise-multiplier": z}))
    orders = dp.accountant.state_dict()["orders"]
    for _ in range(releases):
        dp.accountant.compose(GaussianPrivacyEvent(z, 3, POPULATION))
    spent = dp.accountant.get_privacy_spent()
    assert spent.num_releases == releases and spent.delta == 1e-5
    assert spent.epsilon == pytest.approx(_closed_form_epsilon(z, releases, 1e-5, orders), 1e-9)
    # RDP is an upper bound on the tight (PLD) epsilon of the same releases, and not a loose one.
    pld = dp_accounting.pld.PLDAccountant()
    pld.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), releases))
    assert pld.get_epsilon(1e-5) <= spent.epsilon <= 1.3 * pld.get_epsilon(1e-5)


@pytest.mark.parametrize(("epsilon", "rounds"), [(8.0, 2), (8.0, 3), (1.0, 5)])
def test_calibration_spends_the_whole_budget_and_no_more(epsilon, rounds):
    z = calibrate_noise_multiplier(epsilon, 1e-5, rounds)
    orders = CentralDp(build_strategy(_cfg()), _cfg(**{"privacy.dp-noise-multiplier": z}))
    orders = orders.accountant.state_dict()["orders"]
    assert _closed_form_epsilon(z, rounds, 1e-5, orders) <= epsilon
    assert _closed_form_epsilon(z * 0.999, rounds, 1e-5, orders) > epsilon  # smallest such z
    assert calibrate_noise_multiplier(epsilon, 1e-5, rounds + 1) > z  # more rounds, more noise


def _round(dp: CentralDp, state, n_clients: int, server_round: int = 1):
    grid = FakeGrid(range(1, n_clients + 1))
    sent = list(dp.configure_train(server_round, to_record(state), ConfigRecord(), grid))
    # Every stand-in reply carries global + mean update, as secure_round builds them.
    replies = [reply(m, state, metrics(i, n=1)) for i, m in enumerate(sent)]
    new, _ = dp.aggregate_train(server_round, replies)
    return sent, new


@pytest.mark.parametrize("n_clients", [3, 2])
def test_noise_is_added_once_with_std_z_c_over_m(n_clients):
    cfg = _cfg(**{"privacy.dp-noise-multiplier": 1.5})
    dp = CentralDp(build_strategy(cfg), cfg)
    dp.noise_seed = n_clients  # seeded, so the statistical bounds cannot fail by chance
    state = {"layer.lora_A.weight": np.zeros((400, 500), np.float32)}
    sent, new = _round(dp, state, n_clients)
    assert all(float(m.content["config"][KEY_CLIPPING_NORM]) == 0.5 for m in sent)
    noise = to_numpy(new)["layer.lora_A.weight"].astype(np.float64)
    sigma = 1.5 * 0.5 / n_clients  # sensitivity C/m of the mean of m clipped updates
    assert noise.std() == pytest.approx(sigma, rel=3 / math.sqrt(2 * noise.size))
    assert abs(noise.mean()) < 3 * sigma / math.sqrt(noise.size)
    dp.noise_seed = None  # as in a run: fresh OS entropy, so round 2's noise is new
    _, again = _round(dp, state, n_clients, server_round=2)
    assert not np.array_equal(to_numpy(again)["layer.lora_A.weight"], noise)
    spent = dp.accountant.get_privacy_spent()
    assert spent.num_releases == 2
    log = dp.round_log(n_clients)
    assert log["noise_std"] == pytest.approx(sigma) and log["releases"] == 2
    assert log["epsilon_spent"] == spent.epsilon


def test_a_failed_round_spends_nothing():
    cfg = _cfg(**{"privacy.dp-noise-multiplier": 1.0})
    dp = CentralDp(build_strategy(cfg), cfg)
    new, _ = dp.aggregate_train(1, [])
    assert new is None and dp.accountant.num_releases == 0


def test_resume_recomposes_the_rounds_already_released():
    cfg = _cfg(**{"privacy.dp-noise-multiplier": 1.0})
    dp = CentralDp(build_strategy(cfg), cfg)
    _round(dp, {"a.lora_A.weight": np.zeros((2, 2), np.float32)}, 3)
    record = {"round": 1, "central_dp": dp.round_log(3)}
    resumed = CentralDp(build_strategy(cfg), cfg)
    resumed.restore([record, {"round": 2, "failed": True}])
    assert resumed.accountant.get_privacy_spent() == dp.accountant.get_privacy_spent()


def test_target_epsilon_sets_the_noise_multiplier():
    target = {"privacy.dp-target-epsilon": 8.0, "privacy.dp-noise-multiplier": 0.0}
    cfg = _cfg(**target, **{"num-server-rounds": 2})
    dp = build_central_dp(build_strategy(cfg), cfg)
    assert dp.noise_multiplier == pytest.approx(calibrate_noise_multiplier(8.0, 1e-5, 2))
    assert dp.planned_epsilon == pytest.approx(8.0, abs=1e-4) and dp.planned_epsilon <= 8.0


def test_off_and_local_build_no_central_dp():
    cfg = parse_run_config(pyproject_defaults())
    assert build_central_dp(build_strategy(cfg), cfg) is None


@pytest.mark.parametrize("name", ["fedadam", "ffa-lora", "fedsa-lora"])
def test_strategies_whose_aggregate_is_not_the_mean_are_refused(name):
    cfg = _cfg(**{"privacy.dp-noise-multiplier": 1.0, "strategy.name": name})
    with pytest.raises(ConfigError, match=rf"privacy\.dp-mode = 'central'.*'{name}'"):
        CentralDp(build_strategy(cfg), cfg)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"privacy.dp-mode": "global"}, r"privacy\.dp-mode = 'global'"),
        ({"privacy.dp-target-epsilon": 8.0}, "exactly one"),
        ({"privacy.dp-noise-multiplier": 0.0}, r"privacy\.dp-noise-multiplier = 0\.0"),
        ({"privacy.dp-noise-multiplier": -1.0}, r"privacy\.dp-noise-multiplier = -1\.0"),
        ({"privacy.dp-target-epsilon": math.inf}, r"privacy\.dp-target-epsilon = inf"),
        ({"privacy.dp-clip-norm": math.inf}, r"privacy\.dp-clip-norm = inf"),
        (
            {"privacy.secure-aggregation": False},
            r"privacy\.dp-mode = 'central'.*secure-aggregation",
        ),
        ({"privacy.dp-clip-norm": 0.0}, r"dp-clip-norm > 0"),
        ({"privacy.dp-mode": "off"}, r"privacy\.dp-mode = 'off'.*dp-clip-norm = 0\.5"),
    ],
)
def test_config_errors_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key):
        _cfg(**overrides)
