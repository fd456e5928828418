"""Shared fixtures: the tiny random Llama (fixed seed) and the offline data root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = (REPO.parent / "shared" / "data").resolve()


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
