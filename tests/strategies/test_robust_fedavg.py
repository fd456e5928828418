"""robust-fedavg on hand-built Flower messages: hand-worked rounds, one ×100 poisoner, config."""

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord

from colora.wire import to_numpy, to_record
from runconfig.fields import ConfigError
from runconfig.schema import parse_run_config
from strategies.fedavg import FedAvg
from strategies.registry import build_strategy
from strategies.robust_fedavg import RobustFedAvg, RobustFedAvgConfig
from tests.strategies.fakes import FakeGrid, metrics, reply, strategy, train_round

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
DEFAULTS = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
LAYER = "base_model.model.model.layers.{}.self_attn.q_proj"
A_KEY = f"{LAYER.format(0)}.lora_A.shared.weight"
B_KEY = f"{LAYER.format(0)}.lora_B.shared.weight"

# Rank 1, d_in = d_out = 2. Sorted keys flatten as [A00, A01, B00, B10].
GLOBAL = {
    A_KEY: np.array([[0.5, -0.5]], np.float32),
    B_KEY: np.array([[1.0], [2.0]], np.float32),
}
# Updates with norms 5, √6 and 10 (tests/strategies/test_maths_robust.py: HAND).
UPDATES = {
    101: [3.0, 0.0, 0.0, 4.0],
    102: [2.0, -1.0, 1.0, 0.0],
    103: [0.0, 6.0, 8.0, 0.0],
}


def _state(flat) -> dict[str, np.ndarray]:
    flat = np.asarray(flat, np.float32)
    return {A_KEY: flat[:2].reshape(1, 2), B_KEY: flat[2:].reshape(2, 1)}


def _flat(state) -> np.ndarray:
    return np.concatenate([np.ravel(state[key]) for key in sorted(state)])


def _hand_round(strategy_, updates=UPDATES):
    def update(sent):
        node = sent.metadata.dst_node_id
        sent_flat = _flat(to_numpy(sent.content["arrays"]))
        return _state(sent_flat + np.asarray(updates[node], np.float32)), metrics(node - 101)

    return train_round(strategy_, 1, GLOBAL, FakeGrid(updates), update)


@pytest.mark.parametrize(
    ("params", "expected_update", "log"),
    [
        # Adaptive M = median norm 5 clips [0, 6, 8, 0] to [0, 3, 4, 0]; then per column the
        # median of (3, 2, 0), (0, −1, 3), (0, 1, 4), (4, 0, 0).
        ({"robust-rule": "median"}, [2.0, 0.0, 1.0, 0.0], ("median", 5.0, 1)),
        # β = 0.2 of K = 3 trims nothing: the plain mean of the clipped updates, (5, 2, 5, 4)/3.
        ({}, [5 / 3, 2 / 3, 5 / 3, 4 / 3], ("trimmed-mean", 5.0, 1)),
        # β = 0.4 trims one at each end: the median again.
        ({"trim-fraction": 0.4}, [2.0, 0.0, 1.0, 0.0], ("trimmed-mean", 5.0, 1)),
        # Fixed M = 3 clips two updates: median of (1.8, 2, 0), (0, −1, 1.8), (0, 1, 2.4), ...
        (
            {"robust-rule": "median", "clip-norm": 3.0},
            [1.8, 0.0, 1.0, 0.0],
            ("median", 3.0, 2),
        ),
    ],
)
def test_hand_worked_round(params, expected_update, log):
    robust = strategy("robust-fedavg", **params)
    sent, _, new = _hand_round(robust)
    assert len(sent) == 3
    result = to_numpy(new)
    assert sorted(result) == sorted(GLOBAL)
    assert all(result[key].dtype == np.float32 for key in result)
    np.testing.assert_allclose(_flat(result), _flat(GLOBAL) + expected_update, rtol=1e-6)
    rule, bound, clipped = log
    assert robust.round_log(1) == {
        "robust": {"rule": rule, "clip_norm_used": bound, "clipped_clients": clipped}
    }
    json.dumps(robust.round_log(1))
    assert robust.round_log(2) == {} and robust.state_arrays() == {}


def test_example_counts_do_not_weight_the_aggregate():
    robust = strategy("robust-fedavg", **{"trim-fraction": 0.0, "clip-norm": 100.0})

    def update(sent):
        node = sent.metadata.dst_node_id
        state = _state(_flat(GLOBAL) + np.asarray(UPDATES[node], np.float32))
        return state, metrics(node - 101, n=10**6 if node == 103 else 1)

    _, _, new = train_round(robust, 1, GLOBAL, FakeGrid(UPDATES), update)
    plain_mean = np.mean(list(UPDATES.values()), axis=0)
    np.testing.assert_allclose(_flat(to_numpy(new)), _flat(GLOBAL) + plain_mean, rtol=1e-6)


def test_a_reply_of_another_rank_is_rejected():
    robust = strategy("robust-fedavg")
    sent = list(robust.configure_train(1, to_record(GLOBAL), ConfigRecord(), FakeGrid(UPDATES)))
    smaller = {A_KEY: np.zeros((0, 2), np.float32), B_KEY: np.zeros((2, 0), np.float32)}
    replies = [reply(m, GLOBAL if i else smaller, metrics(i)) for i, m in enumerate(sent)]
    with pytest.raises(ValueError, match="client-ranks is not supported"):
        robust.aggregate_train(1, replies)


# --- One poisoning client: its update is an honest-like one times ±100 ---------------------

RANK, D_IN, D_OUT = 4, 16, 16


def _lora_state(rng, scale):
    state = {}
    for layer in range(2):
        for module in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"):
            prefix = f"base_model.model.model.layers.{layer}.{module}"
            state[f"{prefix}.lora_A.shared.weight"] = scale * rng.normal(size=(RANK, D_IN))
            state[f"{prefix}.lora_B.shared.weight"] = scale * rng.normal(size=(D_OUT, RANK))
    return {k: v.astype(np.float32) for k, v in state.items()}


def _poisoned_round(strategy_, factor):
    """5 clients: 4 honest = direction + 10% noise; client 4 sends factor × an honest update.

    Returns (global + aggregate, honest updates (4 × D), global) as flat vectors."""
    rng = np.random.default_rng(7)
    global_state = _lora_state(rng, 1.0)
    direction = _flat(_lora_state(rng, 0.01))
    nodes = [201, 202, 203, 204, 205]
    honest = {n: direction + 0.1 * _flat(_lora_state(rng, 0.01)) for n in nodes}
    updates = {**honest, 205: factor * honest[205]}
    keys = sorted(global_state)

    def update(sent):
        node = sent.metadata.dst_node_id
        flat = _flat(to_numpy(sent.content["arrays"])) + updates[node]
        sizes = np.cumsum([global_state[k].size for k in keys])[:-1]
        pieces = np.split(flat.astype(np.float32), sizes)
        state = {k: p.reshape(global_state[k].shape) for k, p in zip(keys, pieces, strict=True)}
        return state, metrics(node - 201, n=50)

    _, _, new = train_round(strategy_, 1, global_state, FakeGrid(nodes), update)
    honest_rows = np.stack([honest[n] for n in nodes[:4]])
    return _flat(to_numpy(new)), honest_rows, _flat(global_state)


@pytest.mark.parametrize("factor", [100.0, -100.0])
def test_one_poisoner_moves_fedavg_far_but_robust_fedavg_stays_in_the_honest_range(factor):
    fedavg = strategy("fedavg")
    assert isinstance(fedavg, FedAvg)
    new, honest, global_flat = _poisoned_round(fedavg, factor)
    honest_mean = honest.mean(axis=0)
    spread = np.linalg.norm(honest - honest_mean, axis=1).max()
    max_norm = np.linalg.norm(honest, axis=1).max()
    fedavg_error = np.linalg.norm(new - global_flat - honest_mean)
    # The mean moves by ≈ |factor| / 5 honest updates: far beyond the honest spread.
    assert fedavg_error > 10 * spread and fedavg_error > 10 * max_norm

    for rule in ("median", "trimmed-mean"):
        robust = strategy("robust-fedavg", **{"robust-rule": rule})
        new, _, _ = _poisoned_round(robust, factor)
        aggregate = new - global_flat
        error = np.linalg.norm(aggregate - honest_mean)
        assert error < 2 * max_norm, rule
        assert error < 2 * spread, rule  # as close as the honest clients are to each other
        # Coordinate-wise, the aggregate stays inside the honest clients' range.
        tol = 1e-6
        assert np.all(honest.min(axis=0) - tol <= aggregate), rule
        assert np.all(aggregate <= honest.max(axis=0) + tol), rule
        assert robust.round_log(1)["robust"]["clipped_clients"] >= 1, rule


# --- Config and registry --------------------------------------------------------------------


def test_bad_robust_rule_names_the_key():
    with pytest.raises(ConfigError, match=r"strategy\.robust-rule.*median, trimmed-mean"):
        strategy("robust-fedavg", **{"robust-rule": "mean"})


@pytest.mark.parametrize("value", [0.5, -0.1])
def test_bad_trim_fraction_names_the_key(value):
    with pytest.raises(ConfigError, match=r"strategy\.trim-fraction"):
        strategy("robust-fedavg", **{"trim-fraction": value})


def test_negative_clip_norm_names_the_key():
    with pytest.raises(ConfigError, match=r"strategy\.clip-norm"):
        strategy("robust-fedavg", **{"clip-norm": -1.0})


def test_builds_from_the_pyproject_defaults():
    robust = build_strategy(parse_run_config({**DEFAULTS, "strategy.name": "robust-fedavg"}))
    assert isinstance(robust, RobustFedAvg) and robust.name == "robust-fedavg"
    assert robust.config == RobustFedAvgConfig()
    assert robust.config == RobustFedAvgConfig("trimmed-mean", 0.0, 0.2)
    assert "each update in the clear" in RobustFedAvg.individual_updates
    assert robust.state_arrays() == {} and robust.round_log(1) == {}
