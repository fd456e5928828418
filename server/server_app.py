"""The fedcolora ``ServerApp``: aggregates the shared CoLoRA adapter across clients.

The server builds the initial shared adapter (A random from the run seed, B = 0), runs the
round loop of ``server.federation`` with the configured strategy, and writes the final
shared adapter as a PEFT directory in the run directory.
"""

from __future__ import annotations

import logging

from colora.startup import collector_paused

with collector_paused():  # every run's ServerApp process pays these imports (colora.startup)
    import numpy as np
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp

    from colora.adapter import attach_adapters, shared_state
    from colora.base_model import load_base_model, resolve_model_path
    from colora.export import save_adapter
    from colora.wire import to_torch
    from runconfig import RunConfig, parse_run_config
    from server.federation import run_federation

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
logging.getLogger("httpx").setLevel(logging.WARNING)  # Flower's log shipping is noise here
log = logging.getLogger(__name__)

app = ServerApp()


def initial_shared_state(cfg: RunConfig) -> dict[str, np.ndarray]:
    """The round-0 shared adapter every client starts from."""
    model = attach_adapters(load_base_model(cfg.model), cfg.adapter, seed=cfg.run.seed)
    return {key: value.numpy() for key, value in shared_state(model).items()}


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = parse_run_config(context.run_config)
    log.info(
        "fedcolora: model %s (%s), strategy %s, %d rounds -> %s",
        cfg.model.source,
        cfg.model.quantization,
        cfg.strategy.name,
        cfg.run.num_server_rounds,
        cfg.run_dir(),
    )
    result = run_federation(grid, cfg, initial_shared_state(cfg))
    out = save_adapter(
        to_torch(result.arrays),
        cfg.adapter,
        resolve_model_path(cfg.model),
        result.run_dir / "shared_adapter",
    )
    log.info("Final shared adapter: %s", out)
