"""What a client does with one train or evaluate message, free of Flower types.

A train round loads the shared adapter it was sent and its own Sigma_k from disk, trains,
writes Sigma_k back atomically and returns the new shared tensors with its metrics. An
evaluate round measures the personalised model (global shared part + own Sigma_k) and
exports it as a plain PEFT adapter with Sigma_k folded into B.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping

import torch

from client.batching import batch_stream, eval_batches
from client.personal_store import PERSONAL_FILE, load_personal, save_personal
from client.runtime import ClientData, ModelRuntime
from client.train import Phase, evaluate_loss, train
from colora.adapter import (
    folded_state,
    load_personal_state,
    load_shared_state,
    personal_parameters,
    personal_state,
    shared_parameters,
    shared_state,
)
from colora.export import save_adapter
from runconfig.schema import RunConfig

log = logging.getLogger(__name__)


def fingerprint(state: Mapping[str, torch.Tensor]) -> int:
    """A 52-bit digest of a state dict (fits a float-exact metric) to compare weights."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().float().cpu().numpy().tobytes())
    return int(digest.hexdigest()[:13], 16)


def _phases(cfg: RunConfig, runtime: ModelRuntime) -> list[Phase]:
    shared, personal = shared_parameters(runtime.model), personal_parameters(runtime.model)
    t = cfg.train
    if not personal:
        return [Phase("shared", shared, t.shared_steps, t.learning_rate)]
    if t.schedule == "joint":
        return [Phase("joint", shared + personal, t.shared_steps, t.learning_rate)]
    return [Phase("sigma", personal, t.sigma_steps, t.sigma_learning_rate),
            Phase("shared", shared, t.shared_steps, t.learning_rate)]


def _load_states(runtime: ModelRuntime, data: ClientData, shared: Mapping) -> int:
    """Load the sent shared part and this client's Sigma_k; returns Sigma_k's saved round."""
    load_shared_state(runtime.model, shared)
    stored = load_personal(data.ident.state_dir / PERSONAL_FILE)
    load_personal_state(runtime.model, stored[0] if stored else None)
    return stored[1] if stored else 0


def train_round(
    cfg: RunConfig, runtime: ModelRuntime, data: ClientData, shared: Mapping[str, torch.Tensor],
    *, server_round: int, proximal_mu: float = 0.0,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    personal_round = _load_states(runtime, data, shared)
    start_print = fingerprint(shared_state(runtime.model))
    cid = data.ident.client_id
    tasks = ",".join(sorted(data.train_counts))

    def on_step(phase: str, step: int, total: int, loss: float) -> None:
        log.info("[client %s | %s] round %d %s step %d/%d loss %.4f",
                 cid, tasks, server_round, phase, step, total, loss)

    params = shared_parameters(runtime.model)
    anchors = [p.detach().clone() for p in params]
    pad_id = runtime.tokenizer.pad_token_id
    result = train(
        runtime.model,
        batch_stream(data.train, cfg.train.batch_size, pad_id, seed=cfg.run.seed + server_round),
        _phases(cfg, runtime),
        grad_accum=cfg.train.grad_accum,
        warmup_steps=cfg.train.warmup_steps,
        proximal=(proximal_mu, params, anchors) if proximal_mu > 0 else None,
        on_step=on_step,
    )
    if personal_parameters(runtime.model):
        save_personal(data.ident.state_dir / PERSONAL_FILE, personal_state(runtime.model),
                      server_round=server_round)
    metrics = {
        "num-examples": sum(data.train_counts.values()),
        "client-id": cid,
        "train-loss": result.mean_loss,
        "train-loss-first": result.step_losses[0],
        "train-loss-last": result.step_losses[-1],
        "train-seconds": result.seconds,
        "train-steps": len(result.step_losses),
        "personal-loaded-round": personal_round,
        "shared-in-fingerprint": start_print,
        **{f"train-loss.{task}": value for task, value in result.task_losses.items()},
        **{f"num-examples.{task}": n for task, n in data.train_counts.items()},
    }
    return shared_state(runtime.model), metrics


def evaluate_round(
    cfg: RunConfig, runtime: ModelRuntime, data: ClientData, shared: Mapping[str, torch.Tensor],
    *, server_round: int,
) -> dict[str, float]:
    _load_states(runtime, data, shared)
    losses = evaluate_loss(runtime.model, eval_batches(
        data.valid, cfg.train.batch_size, runtime.tokenizer.pad_token_id))
    save_adapter(folded_state(runtime.model), cfg.adapter, runtime.base_path,
                 data.ident.state_dir / "adapter")
    log.info("[client %s] round %d eval loss %s", data.ident.client_id, server_round,
             {k: round(v, 4) for k, v in losses.items()})
    return {
        "num-examples": len(data.valid),
        "client-id": data.ident.client_id,
        "eval-loss": sum(losses.values()) / max(len(losses), 1),
        **{f"eval-loss.{task}": value for task, value in losses.items()},
    }
