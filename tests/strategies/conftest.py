"""Every strategy test builds Flower messages, which need the process's task identity."""

import pytest


@pytest.fixture(autouse=True)
def _identity(server_task_identity):
    yield
