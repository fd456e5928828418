"""The registry: every strategy builds from pyproject's defaults, and bad names or keys fail."""

import dataclasses
import tomllib
from pathlib import Path

import pytest

from runconfig.fields import ConfigError, toml_key
from runconfig.schema import parse_run_config
from strategies.registry import STRATEGIES, build_strategy

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
DEFAULTS = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
EXPECTED = {
    "similarity-weighted",
    "clustered",
    "coba",
    "fedavg",
    "robust-fedavg",
    "fedprox",
    "fedadam",
    "fedyogi",
    "ffa-lora",
    "fedsa-lora",
    "flora",
    "fedex-lora",
    "local-only",
    "centralized",
}


def test_every_strategy_of_the_issue_is_registered_under_its_class_name():
    assert set(STRATEGIES) == EXPECTED
    assert all(entry.cls.name == name for name, entry in STRATEGIES.items())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_strategy_builds_from_the_pyproject_defaults(name):
    strategy = build_strategy(parse_run_config({**DEFAULTS, "strategy.name": name}))
    assert strategy.name == name
    fresh = strategy.state_arrays()
    assert isinstance(fresh, dict)
    assert isinstance(strategy.round_log(1), dict)
    # a resume whose checkpoints all fail resets the strategy to its fresh state this way
    strategy.load_state({})
    assert {k: v.tolist() for k, v in strategy.state_arrays().items()} == {
        k: v.tolist() for k, v in fresh.items()
    }


@pytest.mark.parametrize("name", ["similarity-weighted", "clustered"])
def test_similarity_aware_strategies_warn_that_secure_aggregation_is_impossible(name, caplog):
    build_strategy(parse_run_config({"strategy.name": name}))
    assert any(
        r.levelname == "WARNING" and "secure aggregation" in r.getMessage() for r in caplog.records
    )


def test_pyproject_declares_every_strategy_key_with_the_dataclass_default():
    for entry in STRATEGIES.values():
        for field in dataclasses.fields(entry.config):
            key = toml_key("strategy", field.name)
            assert key in DEFAULTS, key  # Flower rejects overrides of undeclared keys
            assert DEFAULTS[key] == field.default, key


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="valid: centralized, clustered, coba"):
        build_strategy(parse_run_config({"strategy.name": "fedsgd"}))


def test_unknown_key_is_rejected_and_another_strategys_key_is_ignored():
    with pytest.raises(ConfigError, match=r"strategy\.temperature"):
        build_strategy(parse_run_config({"strategy.temperature": 1.0}))
    fedavg = build_strategy(parse_run_config({"strategy.tau": 0.1}))
    assert fedavg.name == "fedavg"


SECAGG = {"privacy.secure-aggregation": True}


@pytest.mark.parametrize("name", ["similarity-weighted", "clustered", "coba", "robust-fedavg"])
def test_secure_aggregation_is_refused_where_individual_updates_are_needed(name):
    with pytest.raises(ConfigError) as err:
        build_strategy(parse_run_config({**DEFAULTS, **SECAGG, "strategy.name": name}))
    message = str(err.value)
    assert "privacy.secure-aggregation" in message and repr(name) in message
    assert "each update in the clear" in message or "each client's factors" in message
    assert "fedavg" in message  # it says what does run under secure aggregation


@pytest.mark.parametrize(
    "name", ["fedavg", "fedprox", "fedadam", "fedyogi", "ffa-lora", "fedsa-lora"]
)
def test_the_fedavg_family_builds_under_secure_aggregation(name):
    assert build_strategy(parse_run_config({**DEFAULTS, **SECAGG, "strategy.name": name}))


def test_secure_aggregation_refuses_heterogeneous_ranks():
    overrides = {**DEFAULTS, **SECAGG, "strategy.client-ranks": "8,4"}
    with pytest.raises(ConfigError, match=r"strategy\.client-ranks"):
        build_strategy(parse_run_config(overrides))


@pytest.mark.parametrize("codecs", [{"comm.uplink": "int8"}, {"comm.downlink": "bf16"}])
def test_lossy_codecs_are_refused_under_secure_aggregation(codecs):
    with pytest.raises(ConfigError, match="SecAgg\\+ already quantises"):
        build_strategy(parse_run_config({**DEFAULTS, **SECAGG, **codecs}))


def test_a_lossy_uplink_is_refused_with_heterogeneous_ranks():
    overrides = {**DEFAULTS, "comm.uplink": "bf16", "strategy.client-ranks": "8,4"}
    with pytest.raises(ConfigError, match=r"comm\.uplink = 'bf16'.*strategy\.client-ranks"):
        build_strategy(parse_run_config(overrides))
    downlink_only = {**DEFAULTS, "comm.downlink": "int8", "strategy.client-ranks": "8,4"}
    assert build_strategy(parse_run_config(downlink_only))


def test_an_unknown_codec_names_the_key():
    with pytest.raises(ConfigError, match=r"comm\.uplink"):
        parse_run_config({**DEFAULTS, "comm.uplink": "zip"})
