"""Config errors are precise and local (issue 14, section 6): values that passed and should
not, each refused at parse time with the key named."""

from __future__ import annotations

import math
import re

import pytest
from torch import nn

from colora.adapter import check_rank
from runconfig import ConfigError, parse_run_config
from runconfig.schema import MAX_BATCH, MAX_ROUNDS, MAX_STEPS, MAX_TOKENS
from strategies.registry import build_strategy
from tests.conftest import pyproject_defaults

DEFAULTS = pyproject_defaults()
FLOAT_KEYS = [
    "train.learning-rate",
    "train.sigma-learning-rate",
    "train.personal-learning-rate",
    "adapter.alpha",
    "adapter.dropout",
    "round-timeout",
    "privacy.dp-clip-norm",
    "privacy.dp-epsilon",
    "data.dirichlet-alpha",
    "strategy.fraction-train",
    "strategy.max-client-share",
    "privacy.secagg-threshold",
]


def _refused(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_run_config({**DEFAULTS, **override})


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_non_finite_floats_are_refused_by_name(key, value):
    _refused({key: value}, f"^{re.escape(key)} = .*expected a finite number")


@pytest.mark.parametrize("value", [math.inf, math.nan, 1e400])
@pytest.mark.parametrize("key", ["train.batch-size", "num-server-rounds", "adapter.rank"])
def test_non_finite_integers_are_a_config_error_not_an_overflow(key, value):
    _refused({key: value}, f"^{re.escape(key)} = .*expected an integer")


@pytest.mark.parametrize(
    ("key", "value"),
    [("strategy.tau", math.inf), ("strategy.mixing", math.nan), ("strategy.self-weight", math.nan)],
)
def test_strategy_specific_floats_are_finite_too(key, value):
    cfg = parse_run_config({**DEFAULTS, "strategy.name": "similarity-weighted", key: value})
    with pytest.raises(ConfigError, match=f"{re.escape(key)} = .*finite"):
        build_strategy(cfg)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"strategy.min-available-nodes": -1}, r"strategy\.min-available-nodes = -1: must be >="),
        ({"strategy.min-train-nodes": -2}, r"strategy\.min-train-nodes = -2: must be >= 1"),
        (
            {"strategy.min-train-nodes": 5, "strategy.min-available-nodes": 2},
            r"strategy\.min-available-nodes = 2: must be >= strategy\.min-train-nodes = 5",
        ),
        ({"strategy.max-client-share": 0.0}, r"strategy\.max-client-share = 0\.0: must be in"),
        ({"strategy.max-client-share": 1.5}, r"strategy\.max-client-share = 1\.5: must be in"),
    ],
)
def test_negative_or_inconsistent_node_minimums_are_refused(override, message):
    _refused(override, message)


@pytest.mark.parametrize("seed", [-1, 2**31])
def test_a_seed_outside_int32_is_refused_at_parse_time(seed):
    # seeds reach NumPy (< 2**32) and torch (derived seeds, < 2**63) deep in a round
    _refused({"seed": seed}, rf"^seed = {seed}: must be between 0 and 2147483647")


def test_an_absurd_rank_is_refused_at_parse_time():
    _refused({"adapter.rank": 10**9}, r"adapter\.rank = 1000000000: must be <= 8192")


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(16, 8)
        self.up_proj = nn.Linear(16, 32)


def test_a_rank_above_a_target_layer_is_refused_naming_the_layer():
    cfg = parse_run_config({**DEFAULTS, "adapter.rank": 9})
    with pytest.raises(ConfigError, match=r"adapter\.rank = 9: exceeds min\(d_in, d_out\) = 8"):
        check_rank(_Block(), cfg.adapter)
    check_rank(_Block(), parse_run_config({**DEFAULTS, "adapter.rank": 8}).adapter)


@pytest.mark.parametrize(
    ("shares", "threshold", "message"),
    [
        (4, 5, r"privacy\.secagg-threshold = 5\.0: must be below privacy\.secagg-num-shares = 4"),
        (4, 4, r"privacy\.secagg-threshold = 4\.0: must be below"),
        (2, 0.5, r"privacy\.secagg-num-shares = 2\.0: a count must be >= 3"),
        (3.5, 0.5, r"privacy\.secagg-num-shares = 3\.5: a count \(> 1\) must be an integer"),
        (5, 2.5, r"privacy\.secagg-threshold = 2\.5: a count \(> 1\) must be an integer"),
    ],
)
def test_secagg_threshold_must_fit_the_shares(shares, threshold, message):
    _refused({"privacy.secagg-num-shares": shares, "privacy.secagg-threshold": threshold}, message)


def test_secagg_fractions_and_consistent_counts_parse():
    for shares, threshold in [(1.0, 0.67), (5, 3), (5, 0.5), (0.5, 1.0)]:
        parse_run_config(
            {**DEFAULTS, "privacy.secagg-num-shares": shares, "privacy.secagg-threshold": threshold}
        )


@pytest.mark.parametrize(
    "name", ["..", ".", "", "/", "a/b", "../up", "a\\b", "x\x00y", "new\nline", "x" * 256]
)
def test_run_name_must_be_one_safe_path_component(name):
    _refused({"run-name": name}, r"^run-name = ")


def test_a_nul_byte_is_refused_in_any_string_key():
    _refused({"output-dir": "runs\x00/x"}, r"^output-dir = .*control characters")
    _refused({"model.source": "tiny\x00"}, r"^model\.source = .*control characters")


def test_safe_run_names_parse():
    for name in ("default", "r5", "secagg-dp", "run.2026-11-30", "..hidden", "a b"):
        assert parse_run_config({**DEFAULTS, "run-name": name}).run.run_name == name


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("train.batch_size", "train.batch_size"),
        ("num_server_rounds", "num_server_rounds"),
        ("adapter.target_modules", "adapter.target_modules"),
    ],
)
def test_an_unknown_key_is_named_as_written(key, shown):
    _refused({key: 4}, f"unknown config key '{re.escape(shown)}'")


@pytest.mark.parametrize(
    ("key", "bound"),
    [
        ("num-server-rounds", MAX_ROUNDS),
        ("train.shared-steps", MAX_STEPS),
        ("train.sigma-steps", MAX_STEPS),
        ("train.warmup-steps", MAX_STEPS),
        ("train.grad-accum", MAX_STEPS),
        ("train.batch-size", MAX_BATCH),
        ("train.micro-batch-size", MAX_BATCH),
        ("eval.batch-size", MAX_BATCH),
        ("train.max-seq-length", MAX_TOKENS),
        ("eval.max-new-tokens", MAX_TOKENS),
    ],
)
def test_counts_past_any_real_run_are_refused_by_name(key, bound):
    """A typo's extra digits would be a round that never ends or a batch that never fits."""
    assert parse_run_config({**DEFAULTS, key: bound}).to_flat()[key] == bound
    for value in (bound + 1, 2**63 - 1):  # sigma-steps, a float, shows 1000001.0
        _refused({key: value}, rf"^{re.escape(key)} = [0-9.e+]+: must be <= {bound}$")
