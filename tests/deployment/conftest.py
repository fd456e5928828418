"""Every deployment test runs the SuperLink behind nginx (deploy/start_proxy.sh)."""

from __future__ import annotations

import pytest

from tests.conftest import require_tool
from tests.deployment.federation import HAS_NGINX


@pytest.fixture(autouse=True)
def nginx() -> None:
    require_tool(HAS_NGINX, "nginx is not installed (scripts/setup.sh installs nginx-light)")
