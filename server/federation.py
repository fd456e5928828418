"""The server's round loop: Flower's ``Strategy.start`` plus what a long LLM run needs.

Each round calls the strategy's ``configure_train``/``aggregate_train`` and
``configure_evaluate``/``aggregate_evaluate`` exactly as ``Strategy.start`` does, and adds:
screening of every train and evaluate reply against the typed contract (a missing metric, a
NaN, a wrong shape or dtype, garbage bytes, an oversized payload is dropped with a logged
reason and never aggregated; example counts are capped, ``server.weights``) or, with
``privacy.secure-aggregation``, a SecAgg+ exchange (``server.secure_aggregation``), with
central DP noise on its sum when ``privacy.dp-mode = "central"`` (``server.central_dp``);
``comm.*`` compression on the wire (``server.wire_exchange``);
per-client and per-task metrics with bytes up and down in ``metrics.jsonl``; and an atomic
checkpoint after every completed round so ``resume`` continues where a killed server stopped.

No client content can raise out of the loop: if aggregating accepted replies raises or yields a
non-finite adapter, the round is recorded as failed with the reason, the previous adapter is
kept and checkpointed, and the next round starts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid

from colora.contract import decode_record
from colora.wire import to_numpy, to_record
from runconfig.schema import RunConfig
from server import run_dir as rundir
from server.central_dp import build_central_dp
from server.reports import failed_record, log_round, round_record
from server.round_record import RoundRecord
from server.screening import Rejection, WeightLimits, screen_evaluations, screen_replies
from server.secure_aggregation import secure_round
from server.tensorboard import write_round
from server.wire_exchange import exchange, message_bytes
from strategies.maths.validation import check_update
from strategies.ordering import by_client
from strategies.registry import build_strategy

log = logging.getLogger(__name__)


@dataclass
class FederationResult:
    run_dir: Path
    arrays: ArrayRecord
    rounds_completed: int


def _record_failed_round(run_dir, server_round, message, rejected, t0) -> None:
    """A round that cannot aggregate keeps the previous shared adapter; the run continues."""
    log.error(
        "round %d failed: %s; rejected: %s",
        server_round,
        message,
        [r.reason[:200] for r in rejected],
    )
    seconds = time.perf_counter() - t0
    _write(run_dir, failed_record(server_round, seconds=seconds, reason=message, rejected=rejected))


def _write(run_dir, record: RoundRecord) -> None:
    line = record.to_json()
    rundir.append_metrics(run_dir, line)
    write_round(run_dir, line)


def _too_few(sent, accepted, strategy) -> str | None:
    """Why a round with these replies cannot aggregate, or None when it has enough. Checked
    here once for every strategy (``strategies.base.Strategy.min_replies``)."""
    if len(accepted) >= strategy.min_replies:
        return None
    return (
        f"only {len(accepted)} of {len(sent)} clients "
        f"replied with a usable update (min-train-nodes = {strategy.min_replies})"
    )


def _aggregate(strategy, server_round, accepted, layout) -> tuple[ArrayRecord | None, str | None]:
    """The strategy's new arrays, or None and why not. Defence in depth: replies are screened,
    but an exception or a non-finite aggregate from accepted content must not end the run."""
    try:
        new_arrays, _ = strategy.aggregate_train(server_round, accepted)
        if new_arrays is None:
            return None, None
        reason = check_update(decode_record(new_arrays), layout)
    except Exception as error:  # client content must never end the run
        log.exception("aggregation raised in round %d", server_round)
        return None, f"aggregation raised {error!r}"
    return (None, f"the aggregate is unusable: {reason}") if reason else (new_arrays, None)


def _evaluate(strategy, grid, cfg, server_round, arrays):
    """Send, screen and aggregate one evaluate round; a raising strategy only loses it.
    Returns (bytes sent, accepted replies, rejections)."""
    messages = strategy.configure_evaluate(server_round, arrays, ConfigRecord(), grid)
    evaluation = exchange(grid, messages, cfg.run.round_timeout, cfg.comm)
    accepted, rejected = screen_evaluations(evaluation.sent, evaluation.replies, _limits(cfg))
    try:
        strategy.aggregate_evaluate(server_round, accepted)
    except Exception:  # client content must never end the run
        log.exception(
            "aggregate_evaluate raised in round %d; its history misses this round", server_round
        )
    return evaluation.bytes_down, accepted, [*evaluation.rejected, *rejected]


def _save(run_dir, server_round, arrays, strategy) -> None:
    rundir.save_checkpoint(
        run_dir,
        rundir.Checkpoint(
            server_round, to_numpy(arrays), strategy.state_arrays(), {"strategy": strategy.name}
        ),
    )


def _resume(run_dir, cfg, strategy, layout, central_dp) -> tuple[ArrayRecord | None, int]:
    """The checkpointed arrays and the round to start at (None, 1 without a usable one)."""
    ckpt = rundir.load_checkpoint(
        run_dir,
        layout=layout,
        max_round=cfg.run.num_server_rounds,
        strategy=strategy.name,
        restore=strategy.load_state,
    )
    last = ckpt.server_round if ckpt is not None else 0
    rundir.truncate_metrics(run_dir, last)
    if ckpt is None:
        # A checkpoint that failed may have been half read: an empty state is a fresh one.
        # (Not the fresh strategy's state_arrays(): taking it collects the files on disk
        # that no state names, and the checkpoints still name some.)
        strategy.load_state({})
        log.warning("No usable checkpoint in %s: starting from round 1", run_dir)
        return None, 1
    if central_dp:
        central_dp.restore(rundir.read_metrics(run_dir))
    log.info("Resuming %s after round %d", run_dir, ckpt.server_round)
    return to_record(ckpt.arrays), ckpt.server_round + 1


def _secure(grid, train_messages, server_round, cfg):
    """A SecAgg+ round whose stand-in replies (global + mean update, each client's metrics)
    are screened like plain replies: a client's bad metrics drop its stand-in, which leaves
    the mean unchanged. Anything the protocol raises fails only this round."""
    try:
        sent, replies, rejected = secure_round(
            grid, train_messages, server_round, cfg.privacy, cfg.run.round_timeout
        )
    except Exception as error:  # client content must never end the run
        log.exception("SecAgg+ round %d raised", server_round)
        return [], [], [Rejection(0, f"secure aggregation raised {error!r}")]
    return sent, replies, rejected


def _limits(cfg: RunConfig) -> WeightLimits:
    share, train = cfg.strategy.max_client_share, cfg.train
    return WeightLimits(train.max_train_examples, share, train.eval_examples, cfg.data.tasks)


def _train(trainer, grid, cfg, server_round, arrays):
    """(sent, accepted canonical replies, rejections, bytes down, bytes up) of a train round."""
    train_messages = trainer.configure_train(server_round, arrays, ConfigRecord(), grid)
    if cfg.privacy.secure_aggregation:
        sent, replies, rejected = _secure(grid, train_messages, server_round, cfg)
        bytes_down = sum(message_bytes(m) for m in sent)
        uploaded = lambda accepted: sum(message_bytes(m) for m in accepted)  # noqa: E731
    else:
        train = exchange(grid, train_messages, cfg.run.round_timeout, cfg.comm)
        sent, replies, rejected = train.sent, train.replies, train.rejected
        bytes_down, uploaded = train.bytes_down, train.uploaded
    accepted, more = screen_replies(sent, replies, _limits(cfg))
    bytes_up = uploaded(accepted)
    return sent, accepted, [*rejected, *more], bytes_down, bytes_up


def run_federation(grid: Grid, cfg: RunConfig, initial: dict) -> FederationResult:
    """Run ``cfg.run.num_server_rounds`` rounds from ``initial`` (or the checkpoint)."""
    run_dir = rundir.prepare(cfg)
    strategy = build_strategy(cfg)
    strategy.attach(run_dir / rundir.STRATEGY_STATE, cfg.run.round_timeout)
    central_dp = build_central_dp(strategy, cfg)  # None unless privacy.dp-mode = "central"
    trainer = central_dp or strategy  # whose configure_train/aggregate_train the round uses
    arrays, start = to_record(initial), 1
    if cfg.run.resume:
        resumed, start = _resume(run_dir, cfg, strategy, initial, central_dp)
        arrays = resumed if resumed is not None else arrays
    for server_round in range(start, cfg.run.num_server_rounds + 1):
        t0 = time.perf_counter()
        log.info("[ROUND %d/%d] %s", server_round, cfg.run.num_server_rounds, strategy.name)
        sent, accepted, rejected, bytes_down, bytes_up = _train(
            trainer, grid, cfg, server_round, arrays
        )
        # Floating-point sums depend on their order and replies arrive in any order; Adam then
        # amplifies last-bit differences. Aggregating in client-id order keeps a re-run round
        # (after a resume) bit-identical to the uninterrupted run.
        accepted = by_client(accepted)
        too_few = _too_few(sent, accepted, strategy)
        new_arrays, why = (
            (None, too_few) if too_few else _aggregate(trainer, server_round, accepted, initial)
        )
        if new_arrays is None:
            reason = why or "the strategy returned no arrays"
            _record_failed_round(run_dir, server_round, reason, rejected, t0)
            _save(run_dir, server_round, arrays, strategy)
            continue
        arrays = new_arrays
        eval_bytes, evals, eval_rejected = _evaluate(strategy, grid, cfg, server_round, arrays)
        record = round_record(
            server_round,
            seconds=time.perf_counter() - t0,
            train_replies=accepted,
            rejected=[*rejected, *eval_rejected],
            eval_replies=evals,
            bytes_down=bytes_down + eval_bytes,
            bytes_up=bytes_up,
            strategy=strategy.round_log(server_round),
            central_dp=central_dp.round_log(len(accepted)) if central_dp else None,
        )
        _write(run_dir, record)
        log_round(record)
        _save(run_dir, server_round, arrays, strategy)
    return FederationResult(run_dir, arrays, cfg.run.num_server_rounds)
