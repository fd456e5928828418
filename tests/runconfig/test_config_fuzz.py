"""Any value of any run-config key, alone or with others, is a RunConfig or a ConfigError
naming a key: never another exception deep in a round (hypothesis draws keys and values)."""

from __future__ import annotations

import math
from dataclasses import fields

from hypothesis import given, settings
from hypothesis import strategies as st

from runconfig import ConfigError, parse_run_config
from runconfig.fields import toml_key
from strategies.registry import STRATEGIES, build_strategy
from tests.conftest import pyproject_defaults

DEFAULTS = pyproject_defaults()
# Flower's config values are bool, int, float and str; hostile ones beside what plain
# strategies draw: ints beyond any float and int64, the non-finite floats, names of things.
HOSTILE = [10**400, -(10**400), 2**63, -1, 0, 1, math.nan, math.inf, -0.0, 1e-320, "", "0"]
VALUES = st.one_of(
    st.sampled_from(HOSTILE),
    st.sampled_from(sorted(STRATEGIES)),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
)
# every strategy's own keys, which build_strategy checks, beside pyproject's
STRATEGY_KEYS = sorted(
    {toml_key("strategy", f.name) for e in STRATEGIES.values() for f in fields(e.config)}
)
KEYS = st.sampled_from(sorted(DEFAULTS) + STRATEGY_KEYS)


@settings(max_examples=400)
@given(st.dictionaries(KEYS, VALUES, min_size=1, max_size=3), st.sampled_from(sorted(STRATEGIES)))
def test_any_values_give_a_config_or_a_config_error_naming_a_key(override, strategy):
    flat = {**DEFAULTS, "strategy.name": strategy, **override}
    try:
        build_strategy(parse_run_config(flat))
    except ConfigError as exc:
        assert any(key in str(exc) for key in flat), exc
