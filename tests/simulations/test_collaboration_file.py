"""The data-scarce experiment file of issue 11 parses, and its held-out scoring is checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from runconfig.fields import ConfigError
from simulations.experiment import load_experiment, parse_experiment
from simulations.runner import plan

FILE = Path(__file__).resolve().parents[2] / "simulations" / "collaboration.toml"


def test_collaboration_has_the_issue_setup():
    exp = load_experiment(FILE)
    assert exp.settings.seeds == (0, 1, 2) and exp.settings.num_clients == 6
    assert exp.settings.test_examples >= 64
    labels = [s.label for s in exp.strategies]
    assert labels == [
        "local-only",
        "fedavg",
        "colora",
        "dual",
        "similarity-weighted",
        "similarity-weighted-none",
        "similarity-weighted-sigma",
        "clustered",
        "centralized",
    ]
    runs = exp.runs(Path("/nonexistent"))
    assert len(runs) == 27
    from simulations.experiment import resolve

    cfg = resolve(runs[0].overrides)
    assert cfg.train.max_train_examples == 32 and cfg.data.partition == "by-task"  # 16 / client
    assert cfg.eval.every == 0 and cfg.eval.keep_round_adapters  # generation only after the run


def test_seed_filter_runs_seed_0_of_every_strategy_first(tmp_path):
    exp = load_experiment(FILE)
    planned = plan(exp, tmp_path, seeds=[0])
    assert [p.spec.seed for p in planned] == [0] * 9
    with pytest.raises(ConfigError, match="--seed 5"):
        plan(exp, tmp_path, seeds=[5])


def test_held_out_scoring_needs_the_round_adapters():
    text = FILE.read_text().replace('"eval.keep-round-adapters" = true', "")
    with pytest.raises(ConfigError, match="keep-round-adapters"):
        parse_experiment(text)
