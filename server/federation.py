"""The server's round loop: Flower's ``Strategy.start`` plus what a long LLM run needs.

Each round calls the strategy's ``configure_train``/``aggregate_train`` and
``configure_evaluate``/``aggregate_evaluate`` exactly as ``Strategy.start`` does, and adds:
screening of replies (a NaN, a wrong shape or dtype, an oversized payload is dropped with a
logged reason and never aggregated) or, with ``privacy.secure-aggregation``, a SecAgg+ exchange
(``server.secure_aggregation``), per-client and per-task metrics with bytes up and down
in ``metrics.jsonl``, and an atomic checkpoint after every completed round so ``resume``
continues where a killed server stopped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid

from colora.wire import to_numpy, to_record
from runconfig.schema import RunConfig
from server import run_dir as rundir
from server.central_dp import build_central_dp
from server.reports import log_round, round_record
from server.screening import screen_replies
from server.secure_aggregation import secure_round
from server.wire_exchange import exchange, message_bytes
from simulations.tensorboard import write_round
from strategies.ordering import by_client
from strategies.registry import build_strategy

log = logging.getLogger(__name__)


@dataclass
class FederationResult:
    run_dir: Path
    arrays: ArrayRecord
    rounds_completed: int


def _record_failed_round(run_dir, server_round, sent, accepted, rejected, strategy, t0) -> None:
    """A round that cannot aggregate keeps the previous shared adapter; the run continues."""
    message = (
        f"round {server_round} failed: only {len(accepted)} of {len(sent)} clients "
        f"replied with a usable update (min-train-nodes = {strategy.min_train_nodes})"
    )
    log.error("%s; rejected: %s", message, [r.reason[:200] for r in rejected])
    record = {
        "round": server_round,
        "failed": True,
        "reason": message,
        "seconds": round(time.perf_counter() - t0, 3),
        "rejected": [{"node_id": r.node_id, "reason": r.reason} for r in rejected],
    }
    rundir.append_metrics(run_dir, record)
    write_round(run_dir, record)


def run_federation(grid: Grid, cfg: RunConfig, initial: dict) -> FederationResult:
    """Run ``cfg.run.num_server_rounds`` rounds from ``initial`` (or the checkpoint)."""
    run_dir = rundir.prepare(cfg)
    timeout = cfg.run.round_timeout
    strategy = build_strategy(cfg)
    central_dp = build_central_dp(strategy, cfg)  # None unless privacy.dp-mode = "central"
    trainer = central_dp or strategy  # whose configure_train/aggregate_train the round uses
    arrays, start = to_record(initial), 1
    ckpt = rundir.load_checkpoint(run_dir) if cfg.run.resume else None
    if ckpt is not None:
        arrays, start = to_record(ckpt.arrays), ckpt.server_round + 1
        strategy.load_state(ckpt.strategy_state)
        rundir.truncate_metrics(run_dir, ckpt.server_round)
        if central_dp:
            central_dp.restore(rundir.read_metrics(run_dir))
        log.info("Resuming %s after round %d", run_dir, ckpt.server_round)
    for server_round in range(start, cfg.run.num_server_rounds + 1):
        t0 = time.perf_counter()
        log.info("[ROUND %d/%d] %s", server_round, cfg.run.num_server_rounds, strategy.name)
        train_messages = trainer.configure_train(server_round, arrays, ConfigRecord(), grid)
        if cfg.privacy.secure_aggregation:
            sent, accepted, rejected = secure_round(
                grid, train_messages, server_round, cfg.privacy, timeout
            )
            bytes_down = sum(message_bytes(m) for m in sent)
            bytes_up = sum(message_bytes(m) for m in accepted)
        else:
            train = exchange(grid, train_messages, timeout, cfg.comm)
            sent = train.sent
            accepted, rejected = screen_replies(sent, train.replies)
            rejected = [*train.rejected, *rejected]
            bytes_down, bytes_up = train.bytes_down, train.uploaded(accepted)
        # Floating-point sums depend on their order and replies arrive in any order; Adam then
        # amplifies last-bit differences. Aggregating in client-id order keeps a re-run round
        # (after a resume) bit-identical to the uninterrupted run.
        accepted = by_client(accepted)
        new_arrays, _ = trainer.aggregate_train(server_round, accepted)
        if new_arrays is None:
            _record_failed_round(run_dir, server_round, sent, accepted, rejected, strategy, t0)
            continue
        arrays = new_arrays
        evaluation = exchange(
            grid,
            strategy.configure_evaluate(server_round, arrays, ConfigRecord(), grid),
            timeout,
            cfg.comm,
        )
        eval_replies = evaluation.replies
        strategy.aggregate_evaluate(server_round, [r for r in eval_replies if not r.has_error()])
        record = round_record(
            server_round,
            seconds=time.perf_counter() - t0,
            train_replies=accepted,
            rejected=rejected,
            eval_replies=eval_replies,
            bytes_down=bytes_down + evaluation.bytes_down,
            bytes_up=bytes_up,
            extra=strategy.round_log(server_round)
            | (central_dp.round_log(len(accepted)) if central_dp else {}),
        )
        rundir.append_metrics(run_dir, record)
        write_round(run_dir, record)
        log_round(record)
        rundir.save_checkpoint(
            run_dir,
            rundir.Checkpoint(
                server_round, to_numpy(arrays), strategy.state_arrays(), {"strategy": strategy.name}
            ),
        )
    return FederationResult(run_dir, arrays, cfg.run.num_server_rounds)
