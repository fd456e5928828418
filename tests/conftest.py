"""Shared fixtures: the tiny random Llama (fixed seed) and the offline data root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = (REPO.parent / "shared" / "data").resolve()

# Property tests replay the same examples on every run, with no per-example time limit: a
# deadline fails a test on a slow or busy machine, and fresh random examples would make a test's
# outcome a matter of luck (tests that set their own ``@settings`` inherit both).
settings.register_profile("fedcolora", derandomize=True, deadline=None, database=None)
settings.load_profile("fedcolora")

# `make test` runs two pytest-xdist workers that take whole files (``--dist loadfile``, so a
# module's fixtures are built once), in collection order. The longest modules, from
# ``--durations`` on a 2-core machine, go first so that the two workers finish together
# instead of one starting the deployment tests when the other is nearly done.
LONGEST_FIRST = (
    "tests/deployment/test_deployment.py",
    "tests/e2e/test_strategies_e2e.py",
    "tests/e2e/test_resume.py",
    "tests/simulations/test_runner_smoke.py",
    "tests/simulations/test_heldout_e2e.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {module: i for i, module in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


def pyproject_defaults() -> dict:
    """The flat ``[tool.flwr.app.config]`` defaults, as Flower passes them to the apps."""
    import tomllib

    from flwr.common.config import flatten_dict

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    return flatten_dict(project["tool"]["flwr"]["app"]["config"])


def require_tool(available: bool, missing: str) -> None:
    """Skip a test whose optional system package is missing, except under CI (``CI=true``).

    ``scripts/setup.sh`` installs every such package where apt is available, so in CI a
    missing one is a broken setup, and a skip would hide it: there it fails.
    """
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{missing} (scripts/setup.sh installs it; CI must have it)")
    pytest.skip(missing)


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (DATA_ROOT / "mbpp-sanitized").is_dir():
        pytest.fail(f"offline data missing at {DATA_ROOT}")
    return DATA_ROOT


@pytest.fixture(scope="session")
def tiny_model_settings():
    from runconfig.schema import ModelSettings

    return ModelSettings(source="tiny", quantization="none")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_settings):
    from colora.base_model import load_tokenizer

    return load_tokenizer(tiny_model_settings)


@pytest.fixture
def server_task_identity():
    """Flower 1.41 stamps every new Message with the process's task identity; set the
    SuperLink's for tests that build server messages outside a running ServerApp."""
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved
