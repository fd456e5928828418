"""Fixtures of the experiment-runner and report tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.simulations.fake_experiment import build_fake_experiment


@pytest.fixture
def fake_experiment(tmp_path: Path) -> Path:
    """A hand-written experiment directory (see ``fake_experiment.py``)."""
    return build_fake_experiment(tmp_path)
