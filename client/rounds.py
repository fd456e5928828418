"""What a client does with one train or evaluate message, free of Flower types.

A train round assembles its shared adapter, loads its own Sigma_k from disk, trains, writes
Sigma_k back atomically and returns the new shared tensors with its metrics. An evaluate round
measures the personalised model (global shared part + own Sigma_k) and exports it as a plain
PEFT adapter with Sigma_k folded into B.

The server steers the baselines through a :class:`RoundPlan` (keys in ``strategies.protocol``):
the shared adapter is the initial one (A from the seed, B = 0), overlaid by the factors this
client keeps on disk (FedSA-LoRA's B, local-only's A and B), overlaid by what was sent; only the
``train-factors`` train (FFA-LoRA: B); with ``client-ranks`` ranks beyond r_k are zero (HetLoRA);
and FLoRA/FedEx-LoRA's frozen merged term is kept on disk and brought up to the server's round.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from client.batching import batch_stream, eval_batches
from client.personal_store import PERSONAL_FILE, load_personal, save_personal
from client.runtime import ClientData, ModelRuntime
from client.train import Phase, evaluate_loss, resolve_micro_batch_size, train
from colora import contract as keys
from colora import contract as names
from colora.adapter import (
    FACTORS,
    initial_shared_state,
    load_frozen_delta,
    load_personal_state,
    load_shared_state,
    personal_parameters,
    personal_state,
    plain_lora_state,
    shared_parameters,
    shared_state,
)
from colora.base_model import device
from colora.evaluate import EvalSettings, evaluate_model
from colora.export import save_adapter
from colora.keys import lora_rank, split_lora_key, truncate_rank, zero_pad_rank
from runconfig.schema import RunConfig

log = logging.getLogger(__name__)

PRIVATE_SHARED_FILE = "private_shared.safetensors"  # shared factors a strategy keeps local
MERGED_FILE = "merged.safetensors"  # FLoRA / FedEx-LoRA frozen merged term
ROUNDS_DIR = "rounds"  # eval.keep-round-adapters: one exported adapter per evaluated round


@dataclass(frozen=True)
class MergePlan:
    """Bring the frozen merged term to ``round``: keep it, add a low-rank increment B @ A to
    the term of ``round - 1``, or replace it by the dense tensors sent."""

    mode: str  # "keep" | "add" | "replace"
    round: int
    tensors: Mapping[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundPlan:
    """What the server asked of this round (parsed from the message's ConfigRecord)."""

    server_round: int
    proximal_mu: float = 0.0
    train_factors: tuple[str, ...] = FACTORS
    private_factors: tuple[str, ...] = ()
    client_ranks: tuple[int, ...] = ()
    steps_scale: int = 1
    merge: MergePlan | None = None

    @classmethod
    def from_config(cls, config: Mapping, merge_tensors: Mapping[str, torch.Tensor]) -> RoundPlan:
        def items(key: str, default: str = "") -> tuple[str, ...]:
            return tuple(x.strip() for x in str(config.get(key, default)).split(",") if x.strip())

        merge = None
        if keys.MERGE_ROUND in config:
            merge = MergePlan(
                str(config[keys.MERGE_MODE]), int(config[keys.MERGE_ROUND]), dict(merge_tensors)
            )
        return cls(
            server_round=int(config["server-round"]),
            proximal_mu=float(config.get(keys.PROXIMAL_MU, 0.0)),
            train_factors=items(keys.TRAIN_FACTORS, ",".join(FACTORS)),
            private_factors=items(keys.PRIVATE_FACTORS),
            client_ranks=tuple(int(r) for r in items(keys.CLIENT_RANKS)),
            steps_scale=int(config.get(keys.STEPS_SCALE, 1)),
            merge=merge,
        )

    def rank_for(self, client_id: int) -> int | None:
        """This client's LoRA rank r_k under ``client-ranks``, or None for the full rank."""
        return self.client_ranks[client_id % len(self.client_ranks)] if self.client_ranks else None


def fingerprint(state: Mapping[str, torch.Tensor]) -> int:
    """A 52-bit digest of a state dict (fits a float-exact metric) to compare weights."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().float().cpu().numpy().tobytes())
    return int(digest.hexdigest()[:13], 16)


def _by_factor(state: Mapping[str, torch.Tensor], factors: tuple[str, ...]) -> dict:
    return {k: v for k, v in state.items() if (split_lora_key(k) or ("", ""))[1] in factors}


def _with_rank(state: Mapping[str, torch.Tensor], rank: int, *, pad: bool) -> dict:
    """HetLoRA: keep the first ``rank`` ranks, zero-padded back to the full rank if ``pad``."""
    arrays = {k: v.detach().cpu().numpy() for k, v in state.items()}
    cut = truncate_rank(arrays, rank)
    out = zero_pad_rank(cut, lora_rank(arrays)) if pad else cut
    return {k: torch.from_numpy(v) for k, v in out.items()}


def _phases(cfg: RunConfig, runtime: ModelRuntime, plan: RoundPlan) -> list[Phase]:
    """CoLoRA: Sigma_k, then the shared A, B; dual: the shared LoRA, then the personal one;
    ``schedule = "joint"``: all together at the shared learning rate."""
    shared = shared_parameters(runtime.model, plan.train_factors)
    personal = personal_parameters(runtime.model)
    t = cfg.train
    shared_steps = t.shared_steps * plan.steps_scale
    sigma_steps = t.personal_steps(plan.steps_scale)
    if not personal:
        return [Phase("shared", shared, shared_steps, t.learning_rate)]
    if t.schedule == "joint":
        return [Phase("joint", shared + personal, shared_steps, t.learning_rate)]
    if cfg.adapter.personal == "dual":
        # FedDPA (arXiv 2409.17201): the global adapter learns first, then the personal one
        # fits what remains of the client's own task, with the global adapter frozen.
        return [
            Phase("shared", shared, shared_steps, t.learning_rate),
            Phase("personal", personal, sigma_steps, t.dual_learning_rate),
        ]
    return [
        Phase("sigma", personal, sigma_steps, t.sigma_learning_rate),
        Phase("shared", shared, shared_steps, t.learning_rate),
    ]


def _frozen_term(data: ClientData, merge: MergePlan) -> dict[str, torch.Tensor]:
    """The frozen merged term at ``merge.round``, updated on disk (FLoRA, FedEx-LoRA)."""
    path = data.ident.state_dir / MERGED_FILE
    held, held_round = load_personal(path) or ({}, 0)
    if merge.mode == "replace":
        term = {k.removesuffix(f".{keys.MERGE_DENSE}"): v for k, v in merge.tensors.items()}
    elif held_round == merge.round:  # already applied (e.g. at the last evaluation)
        return held
    elif merge.mode == "add" and held_round == merge.round - 1:
        term = dict(held)
        for layer in {k.rsplit(".", 1)[0] for k in merge.tensors}:
            increment = (
                merge.tensors[f"{layer}.{keys.MERGE_B}"].float()
                @ merge.tensors[f"{layer}.{keys.MERGE_A}"].float()
            )  # d_out x q @ q x d_in
            term[layer] = term[layer] + increment if layer in term else increment
    else:
        raise ValueError(
            f"frozen merged term: this client holds round {held_round}; the server "
            f"sent '{merge.mode}' for round {merge.round}"
        )
    save_personal(path, term, server_round=merge.round)
    return term


def _load_states(
    runtime: ModelRuntime,
    data: ClientData,
    sent: Mapping[str, torch.Tensor],
    plan: RoundPlan,
    *,
    training: bool,
) -> int:
    """Assemble and load the shared adapter, Sigma_k and the frozen term; returns Sigma_k's
    saved round. Private state comes from before this round when training (a resumed round
    must not see what an aborted attempt of it wrote), from this round's training otherwise."""
    before = plan.server_round if training else plan.server_round + 1
    state = initial_shared_state(runtime.model)
    if plan.private_factors:
        stored = load_personal(data.ident.state_dir / PRIVATE_SHARED_FILE, before_round=before)
        state.update(stored[0] if stored else {})
    state.update(sent)
    rank = plan.rank_for(data.ident.client_id)
    load_shared_state(runtime.model, state if rank is None else _with_rank(state, rank, pad=True))
    stored = load_personal(data.ident.state_dir / PERSONAL_FILE, before_round=before)
    load_personal_state(runtime.model, stored[0] if stored else None)
    term = _frozen_term(data, plan.merge) if plan.merge is not None else None
    load_frozen_delta(runtime.model, term)
    return stored[1] if stored else 0


def _reply_state(runtime: ModelRuntime, data: ClientData, sent_keys, plan: RoundPlan) -> dict:
    """The new values of exactly the keys that were sent (r_k ranks under client-ranks)."""
    state = {k: v for k, v in shared_state(runtime.model).items() if k in sent_keys}
    rank = plan.rank_for(data.ident.client_id)
    return state if rank is None or not state else _with_rank(state, rank, pad=False)


def _save_private(runtime: ModelRuntime, data: ClientData, plan: RoundPlan) -> None:
    if personal_parameters(runtime.model):
        save_personal(
            data.ident.state_dir / PERSONAL_FILE,
            personal_state(runtime.model),
            server_round=plan.server_round,
        )
    if plan.private_factors:
        save_personal(
            data.ident.state_dir / PRIVATE_SHARED_FILE,
            _by_factor(shared_state(runtime.model), plan.private_factors),
            server_round=plan.server_round,
        )


def train_round(
    cfg: RunConfig,
    runtime: ModelRuntime,
    data: ClientData,
    shared: Mapping[str, torch.Tensor],
    plan: RoundPlan,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    personal_round = _load_states(runtime, data, shared, plan, training=True)
    start_print = fingerprint(shared_state(runtime.model))
    cid = data.ident.client_id
    # Dropout draws from torch's global RNG; seeding it per (run, round, client) makes a
    # resumed round retrace the uninterrupted one, whichever worker process runs it.
    torch.manual_seed(cfg.run.seed * 1_000_003 + plan.server_round * 10_007 + cid)
    tasks = ",".join(sorted(data.train_counts))

    def on_step(phase: str, step: int, total: int, loss: float) -> None:
        log.info(
            "[client %s | %s] round %d %s step %d/%d loss %.4f",
            cid,
            tasks,
            plan.server_round,
            phase,
            step,
            total,
            loss,
        )

    params = shared_parameters(runtime.model, plan.train_factors)
    anchors = [p.detach().clone() for p in params]
    pad_id = runtime.tokenizer.pad_token_id
    result = train(
        runtime.model,
        batch_stream(
            data.train,
            cfg.train.batch_size,
            pad_id,
            seed=cfg.run.seed + plan.server_round,
            group_by_length=cfg.train.group_by_length,
        ),
        _phases(cfg, runtime, plan),
        grad_accum=cfg.train.grad_accum,
        micro_batch_size=resolve_micro_batch_size(cfg.train.micro_batch_size, device()),
        warmup_steps=cfg.train.warmup_steps,
        proximal=(plan.proximal_mu, params, anchors) if plan.proximal_mu > 0 else None,
        on_step=on_step,
    )
    _save_private(runtime, data, plan)
    metrics = {
        names.NUM_EXAMPLES: sum(data.train_counts.values()),
        names.CLIENT_ID: cid,
        names.TRAIN_LOSS: result.mean_loss,
        names.TRAIN_LOSS_FIRST: result.step_losses[0],
        names.TRAIN_LOSS_LAST: result.step_losses[-1],
        names.TRAIN_SECONDS: result.seconds,
        names.TRAIN_STEPS: len(result.step_losses),
        names.TRAIN_ON_GPU: int(next(runtime.model.parameters()).is_cuda),
        names.PERSONAL_LOADED_ROUND: personal_round,
        names.SHARED_IN_FINGERPRINT: start_print,
        **_merge_metric(plan),
        **{names.TRAIN_LOSS_TASK + task: value for task, value in result.task_losses.items()},
        **{names.TASK_EXAMPLES + task: n for task, n in data.train_counts.items()},
    }
    return _reply_state(runtime, data, set(shared), plan), metrics


def _merge_metric(plan: RoundPlan) -> dict[str, int]:
    return {keys.MERGE_ROUND: plan.merge.round} if plan.merge is not None else {}


def round_adapter_dir(data: ClientData, server_round: int):
    """Where ``eval.keep-round-adapters`` keeps the client's adapter of ``server_round``."""
    return data.ident.state_dir / ROUNDS_DIR / f"round-{server_round:03d}"


def evaluate_round(
    cfg: RunConfig,
    runtime: ModelRuntime,
    data: ClientData,
    shared: Mapping[str, torch.Tensor],
    plan: RoundPlan,
) -> dict[str, float]:
    _load_states(runtime, data, shared, plan, training=False)
    losses = evaluate_loss(
        runtime.model,
        eval_batches(data.valid, cfg.train.batch_size, runtime.tokenizer.pad_token_id),
    )
    exported = plain_lora_state(runtime.model, cfg.adapter)
    save_adapter(*exported, runtime.base_path, data.ident.state_dir / "adapter")
    if cfg.eval.keep_round_adapters:
        save_adapter(*exported, runtime.base_path, round_adapter_dir(data, plan.server_round))
    log.info(
        "[client %s] round %d eval loss %s",
        data.ident.client_id,
        plan.server_round,
        {k: round(v, 4) for k, v in losses.items()},
    )
    due = cfg.eval.due(plan.server_round, cfg.run.num_server_rounds)
    return {
        names.NUM_EXAMPLES: len(data.valid),
        names.CLIENT_ID: data.ident.client_id,
        names.EVAL_LOSS: sum(losses.values()) / max(len(losses), 1),
        **_merge_metric(plan),
        **{names.EVAL_LOSS_TASK + task: value for task, value in losses.items()},
        **(generation_metrics(cfg, runtime, data, plan.server_round) if due else {}),
    }


def generation_metrics(
    cfg: RunConfig, runtime: ModelRuntime, data: ClientData, server_round: int
) -> dict[str, float]:
    """The evaluation issue's task metrics on the first ``eval.limit`` local validation
    examples of each task, as ``eval.<task>.<metric>`` (0-100 scale) plus
    ``eval-seconds.<task>``, for the personalised model currently loaded."""
    settings = EvalSettings(
        batch_size=cfg.eval.batch_size,
        max_new_tokens=cfg.eval.max_new_tokens or None,
    )
    out: dict[str, float] = {}
    for task, examples in sorted(data.valid_examples.items()):
        if not examples:
            continue
        report = evaluate_model(runtime.model, runtime.tokenizer, examples, task, settings)
        out |= {f"{names.EVAL_METRIC}{task}.{name}": float(v) for name, v in report.metrics.items()}
        out[names.EVAL_SECONDS + task] = sum(report.seconds.values())
        log.info(
            "[client %s] round %d %s on %d examples: %s",
            data.ident.client_id,
            server_round,
            task,
            len(examples),
            {k: round(v, 2) for k, v in report.metrics.items()},
        )
    return out
