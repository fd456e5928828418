"""`make run` through Flower's managed local SuperLink installs nothing and replaces a stale one.

A SuperLink started without ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` (by an older
`make run`, or a plain `flwr run . local`) makes every run `uv sync` the app's dependencies into
``$FLWR_HOME/runtime-envs``: gigabytes of CUDA wheels on a CPU-only machine. The test starts
such a SuperLink on private ports, then runs the real `make run` target (tiny model, one
round) and checks that the stale SuperLink was replaced, that the one that served the run has
the variable, and that no runtime environment was created.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.deployment.federation import free_port, wait_for

pytestmark = pytest.mark.slow

_SCRIPT = REPO / "scripts" / "local_superlink.py"
_spec = importlib.util.spec_from_file_location("local_superlink", _SCRIPT)
local_superlink = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(local_superlink)


def _healthy(port: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def ports(monkeypatch):
    """Private ports for the managed SuperLink, so a developer's own one is never touched."""
    http, control = str(free_port()), str(free_port())
    monkeypatch.setenv("FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", http)
    monkeypatch.setenv("FLWR_LOCAL_CONTROL_API_PORT", control)
    yield http, control
    for process in local_superlink.managed_superlinks(port=http):
        local_superlink.stop(process)


def _start_stale_superlink(http: str, control: str, home: Path) -> subprocess.Popen:
    """The command Flower's `flwr run . local` uses, without the variable in its environment."""
    env = {k: v for k, v in os.environ.items() if k != local_superlink.VARIABLE}
    bin_dir = Path(sys.executable).parent  # it starts `flower-superexec` from PATH
    env.update(FLWR_HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{env['PATH']}")
    command = [
        str(bin_dir / "flower-superlink"),
        *("--insecure", "--simulation", "--isolation", "subprocess"),
        *("--control-api-address", f"127.0.0.1:{control}"),
        *("--host", "127.0.0.1", "--port", http),
        *("--database", str(home / "stale.db")),
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for(lambda: _healthy(http), 60, "the stale SuperLink to answer", poll=0.5)
    return process


def test_make_run_replaces_a_stale_superlink_and_creates_no_runtime_env(ports, tmp_path, data_root):
    http, control = ports
    home, out = tmp_path / "flwr-home", tmp_path / "runs"
    home.mkdir()
    stale = _start_stale_superlink(http, control, home)
    assert [p.pid for p in local_superlink.managed_superlinks(port=http)] == [stale.pid]
    assert (
        subprocess.run(
            [sys.executable, str(_SCRIPT), "check"],
            capture_output=True,
        ).returncode
        == 1
    )

    overrides = (
        "model.source='tiny' num-server-rounds=1 run-name='make-run' eval.every=0 "
        "train.max-train-examples=4 train.eval-examples=2 train.batch-size=2 "
        "train.sigma-steps=1 train.shared-steps=1 train.max-seq-length=128"
    )
    result = subprocess.run(
        [
            "make", "--no-print-directory", "-C", str(REPO), "run",
            f"FLWR_HOME={home}", f"OUTPUT_DIR={out}", f"DATA_ROOT={data_root}",
            f"RUN_CONFIG={overrides}",
        ],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    assert stale.wait(timeout=30) is not None  # replaced, not reused
    serving = local_superlink.managed_superlinks(port=http)
    assert len(serving) == 1 and serving[0].pid != stale.pid
    assert not local_superlink.installs_dependencies(serving[0])
    assert not (home / "runtime-envs").exists(), sorted(p.name for p in home.iterdir())
    lines = (out / "make-run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1]
