"""Run the fedcolora app in Flower's simulation engine from Python, with run-config overrides.

``flwr run .`` is the user-facing command; it ships the app to a (local) SuperLink that
starts ``flwr-simulation``. This module drives the same engine in-process, exactly as
``flwr-simulation`` does (``_run_simulation`` with a ``Run`` carrying the overrides and the
app directory), so tests and experiment sweeps get per-run overrides without a SuperLink
daemon. The ServerApp's context gets the same fused config as the clients.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.config import get_fused_config_from_dir
from flwr.common.constant import RUN_ID_NUM_BYTES, SUPERLINK_NODE_ID, TASK_ID_NUM_BYTES
from flwr.server.superlink.linkstate.utils import generate_rand_int_from_bytes
from flwr.simulation.run_simulation import _run_simulation
from flwr.supercore.constant import NOOP_FEDERATION_ID
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.supercore.telemetry import EventType

import server.tensorboard  # noqa: F401  (imported here, on the main thread; see there)

APP_DIR = Path(__file__).resolve().parents[1]


def _new_run(overrides: Mapping[str, Any]) -> Run:
    run = Run.create_empty(run_id=generate_rand_int_from_bytes(RUN_ID_NUM_BYTES))
    run.primary_task_id = generate_rand_int_from_bytes(TASK_ID_NUM_BYTES)
    run.federation_id = NOOP_FEDERATION_ID
    run.override_config = dict(overrides)
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run.run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    return run


def simulate(
    overrides: Mapping[str, Any],
    *,
    num_supernodes: int,
    cpus_per_client: float = 1,
    gpus_per_client: float = 0.0,
    ray_init_args: Mapping[str, Any] | None = None,
    app_dir: Path = APP_DIR,
    client_app: ClientApp | None = None,
) -> None:
    """Run one federation; raises if the ServerApp fails (unknown keys fail first).

    ``client_app`` replaces fedcolora's ClientApp (fault-injection tests wrap it)."""
    from server.server_app import app as server_app

    if client_app is None:
        from client.client_app import app as client_app

    run = _new_run(overrides)
    run_config = get_fused_config_from_dir(app_dir, dict(overrides))
    context = Context(
        run_id=run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config=run_config
    )
    backend_config = {
        "client_resources": {"num_cpus": cpus_per_client, "num_gpus": gpus_per_client},
        "init_args": dict(ray_init_args or {}),
    }
    _run_simulation(
        num_supernodes=num_supernodes,
        exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
        client_app=client_app,
        server_app=server_app,
        backend_config=backend_config,
        app_dir=str(app_dir),
        is_app=True,  # makes clients fuse pyproject defaults with the overrides
        run=run,
        server_app_context=context,
    )
