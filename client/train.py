"""One client's local round: alternating CoLoRA phases, plus evaluation loss per task.

CoLoRA (arXiv 2602.07218) alternates: e1 steps on the private Sigma_k with A, B frozen, then
e2 steps on the shared A, B with Sigma_k frozen; the analysis covers this alternating scheme,
and ``schedule = "joint"`` trains everything together instead. FedProx (Li et al. 2020,
arXiv 1812.06127) is available by a positive ``proximal_mu`` on the shared parameters.
Each phase has linear warm-up then cosine decay. Forward passes run in the model's compute
dtype (:mod:`colora.precision`), the LM head only where there are labels, and an NF4 base is
dequantised once per round (:func:`colora.base_model.dense_4bit_weights`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from client.batching import IGNORE, Batch
from colora import precision
from colora.base_model import dense_4bit_weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phase:
    name: str  # "sigma" | "personal" | "shared" | "joint"
    params: Sequence[nn.Parameter]
    steps: int
    learning_rate: float


@dataclass
class TrainResult:
    step_losses: list[float] = field(default_factory=list)
    task_losses: dict[str, float] = field(default_factory=dict)
    examples_seen: int = 0
    seconds: float = 0.0

    @property
    def mean_loss(self) -> float:
        return sum(self.step_losses) / max(len(self.step_losses), 1)


def _causal_lm(model: nn.Module) -> nn.Module:
    """The transformers ``*ForCausalLM`` under a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if get_base is not None else model


def per_example_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean next-token loss over each example's response tokens -> [B].

    The LM head (a 49,152-word vocabulary for SmolLM2) and the cross-entropy run only at the
    positions whose next token is labelled, not over the whole padded sequence: the decoder's
    hidden states are gathered there first. The loss is the same as with full logits (tested);
    the head's matmul, the fp32 logits and their gradient shrink to the response tokens.
    """
    device = next(p for p in model.parameters()).device
    causal_lm = _causal_lm(model)
    labels = batch.labels[:, 1:].to(device)  # label of the token after each position
    rows, cols = (labels != IGNORE).nonzero(as_tuple=True)  # [N] each, row-major
    with precision.autocast(model):
        hidden = causal_lm.get_decoder()(
            input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)
        ).last_hidden_state  # [B, T, H]
        logits = causal_lm.get_output_embeddings()(hidden[rows, cols])  # [N, V]
    token_loss = nn.functional.cross_entropy(logits.float(), labels[rows, cols], reduction="none")
    # Scattered back to [B, T] (unique indices, so deterministic on CUDA too) and summed per row.
    per_token = torch.zeros(labels.shape, device=device).index_put((rows, cols), token_loss)
    counts = (labels != IGNORE).sum(dim=1).clamp(min=1)
    return per_token.sum(dim=1) / counts


def resolve_micro_batch_size(setting: int, where: torch.device) -> int:
    """``train.micro-batch-size``: 0 (auto) is 2 examples a pass on the CPU and the whole batch
    on CUDA, whose kernels want wide products. Measured on the bundled model, 4 x 256, bf16, 2
    threads (README, "Local training speed"): pieces of 2 cut the step's peak from 3.6 to 2.6 GB
    for 7% more time; pieces of 1 reach 1.9 GB but cost 33%, as 2 threads split small products
    poorly."""
    if setting > 0:
        return setting
    return 0 if where.type == "cuda" else 2


def split_batch(batch: Batch, size: int) -> list[Batch]:
    """``batch`` in pieces of at most ``size`` examples (0: one piece), each cut to its own
    longest row, since a right-padded batch's width is set by its longest example."""
    if size <= 0 or size >= len(batch.tasks):
        return [batch]
    pieces = []
    for start in range(0, len(batch.tasks), size):
        rows = slice(start, start + size)
        width = int(batch.attention_mask[rows].sum(dim=1).max().clamp(min=1))
        tensors = (batch.input_ids, batch.attention_mask, batch.labels)
        ids, mask, labels = (t[rows, :width] for t in tensors)
        pieces.append(Batch(ids, mask, labels, batch.tasks[rows]))
    return pieces


def _backward_in_pieces(model: nn.Module, batch: Batch, size: int, grad_accum: int) -> torch.Tensor:
    """Backpropagate ``batch``'s mean loss / ``grad_accum``, ``size`` examples at a time.

    Each piece contributes the sum of its per-example losses over the whole batch's count, so
    the accumulated gradient is the whole batch's (up to float summation order): activations
    are kept for one piece at a time, which cuts a step's peak memory (pieces of 2 of a batch of
    4: 3.6 -> 2.6 GB on the bundled model; README, "Local training speed"). Returns the
    per-example losses.
    """
    losses = []
    for piece in split_batch(batch, size):
        piece_losses = per_example_loss(model, piece)
        if piece_losses.requires_grad:  # else nothing it trains is on this piece's path
            (piece_losses.sum() / (len(batch.tasks) * grad_accum)).backward()
        losses.append(piece_losses.detach())
    return torch.cat(losses)


def _backward_proximal(
    mu: float, params: Sequence[nn.Parameter], anchors: Sequence[torch.Tensor], *, scale: float
) -> float:
    """Backpropagate FedProx's ``mu / 2 * ||w - w_global||^2`` times ``scale``; its value."""
    if mu <= 0:
        return 0.0
    term = (
        0.5
        * mu
        * sum((p - a.to(p.device)).pow(2).sum() for p, a in zip(params, anchors, strict=True))
    )
    if term.requires_grad:  # frozen in a phase that trains other parameters (Sigma_k)
        (term * scale).backward()
    return term.item()


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(total - warmup, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _set_trainable(all_params: Iterable[nn.Parameter], active: Sequence[nn.Parameter]) -> None:
    active_ids = {id(p) for p in active}
    for param in all_params:
        param.requires_grad_(id(param) in active_ids)


def train(
    model: nn.Module, batches: Iterator[Batch], phases: Sequence[Phase], **options
) -> TrainResult:
    """Run ``phases`` in order (see :func:`_train`) with an NF4 base dequantised once for the
    whole round rather than at every product."""
    with dense_4bit_weights(model):
        return _train(model, batches, phases, **options)


def _train(
    model: nn.Module,
    batches: Iterator[Batch],
    phases: Sequence[Phase],
    *,
    grad_accum: int = 1,
    micro_batch_size: int = 0,
    warmup_steps: int = 0,
    proximal: tuple[float, Sequence[nn.Parameter], Sequence[torch.Tensor]] | None = None,
    on_step: Callable[[str, int, int, float], None] | None = None,
) -> TrainResult:
    """Run ``phases`` in order; ``proximal = (mu, params, anchors)`` adds FedProx's term.

    Each optimizer step sees ``grad_accum`` batches; each batch's forward and backward passes
    run in pieces of ``micro_batch_size`` examples (0: the whole batch) with the same gradient
    (see :func:`_backward_in_pieces`).
    """
    model.train()
    trainable = [p for phase in phases for p in phase.params]
    result, by_task = TrainResult(), defaultdict(list)
    start = time.perf_counter()
    for phase in phases:
        if phase.steps == 0:
            continue
        _set_trainable(trainable, phase.params)
        optimizer = torch.optim.AdamW(phase.params, lr=phase.learning_rate, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(min(warmup_steps, phase.steps - 1), phase.steps)
        )
        for step in range(phase.steps):
            step_loss = 0.0
            for _ in range(grad_accum):
                batch = next(batches)
                losses = _backward_in_pieces(model, batch, micro_batch_size, grad_accum)
                loss = losses.mean().item()
                if proximal is not None:
                    loss += _backward_proximal(*proximal, scale=1 / grad_accum)
                step_loss += loss / grad_accum
                for task, value in zip(batch.tasks, losses.tolist(), strict=True):
                    by_task[task].append(value)
                result.examples_seen += len(batch.tasks)
            if not math.isfinite(step_loss):
                raise FloatingPointError(f"{phase.name} step {step + 1}: loss is {step_loss}")
            torch.nn.utils.clip_grad_norm_(phase.params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            result.step_losses.append(step_loss)
            if on_step is not None:
                on_step(phase.name, step + 1, phase.steps, step_loss)
    _set_trainable(trainable, [])
    result.task_losses = {task: sum(v) / len(v) for task, v in by_task.items()}
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def evaluate_loss(model: nn.Module, batches: Iterable[Batch]) -> dict[str, float]:
    """Mean per-example response loss for each task present in ``batches``."""
    model.eval()
    by_task: dict[str, list[float]] = defaultdict(list)
    with dense_4bit_weights(model):
        for batch in batches:
            losses = per_example_loss(model, batch).tolist()
            for task, value in zip(batch.tasks, losses, strict=True):
                by_task[task].append(value)
    return {task: sum(v) / len(v) for task, v in by_task.items()}
