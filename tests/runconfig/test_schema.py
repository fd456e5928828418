"""The run config parses pyproject's defaults and names every bad key or value."""

from __future__ import annotations

import pytest

from runconfig import ConfigError, parse_run_config
from tests.conftest import pyproject_defaults


@pytest.fixture(scope="module")
def defaults() -> dict:
    return pyproject_defaults()


def test_pyproject_defaults_parse(defaults):
    cfg = parse_run_config(defaults)
    assert cfg.model.source == "bundled"
    assert cfg.model.quantization == "nf4"
    assert cfg.adapter.scale == cfg.adapter.alpha / cfg.adapter.rank
    assert cfg.data.tasks == ("generation", "translation", "summarization")
    assert cfg.strategy.name == "fedavg"


def test_round_trip_through_flat_keys(defaults):
    cfg = parse_run_config(defaults)
    assert parse_run_config(cfg.to_flat()) == cfg


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"train.batch-size": "four"}, r"train\.batch-size = 'four': expected an integer"),
        ({"train.batch-size": 2.5}, r"train\.batch-size = 2\.5: expected an integer"),
        ({"train.batchsize": 4}, r"unknown config key 'train\.batchsize'"),
        ({"model.quantization": "int3"}, r"model\.quantization = 'int3': must be one of"),
        ({"adapter.rank": 0}, r"adapter\.rank = 0: must be >= 1"),
        ({"train.micro-batch-size": -1}, r"train\.micro-batch-size = -1: must be >= 0"),
        ({"data.tasks": "generation,poetry"}, r"data\.tasks = 'poetry': unknown task"),
        ({"resume": "yes"}, r"resume = 'yes': expected true or false"),
        ({"optimizer.lr": 1.0}, r"unknown config section in key 'optimizer\.lr'"),
        ({"strategy.fraction-train": 0.0}, r"strategy\.fraction-train = 0\.0"),
    ],
)
def test_bad_keys_and_values_are_named(defaults, override, message):
    with pytest.raises(ConfigError, match=message):
        parse_run_config({**defaults, **override})


def test_unknown_strategy_lists_valid_names(defaults):
    from strategies.registry import build_strategy

    cfg = parse_run_config({**defaults, "strategy.name": "fedmagic"})
    with pytest.raises(ConfigError, match=r"unknown strategy; valid: .*fedavg"):
        build_strategy(cfg)
