"""Benchmark one client's local training step on the bundled model against a plain PEFT loop.

Prints one JSON line per configuration run: ``config``, ``s_per_step``, ``tokens_per_s``,
``peak_rss_mb`` (the process's ``ru_maxrss``, loading included), ``rss_after_load_mb``,
``rss_ready_mb`` (resident memory when the first step starts, data loaded),
``cpu_s_per_step`` (the process's CPU time per step: with ``--threads 1`` a measure of work
that holds while other jobs share the machine), ``loss_first`` and ``loss_last`` (and every
step's loss with ``--trajectory``). A configuration is ``kind:dtype[:ckpt]``:

- ``client``: the project's :func:`client.train.train` on the CoLoRA model (shared LoRA + Sigma_k
  hooks), response-only LM head, one Sigma_k step then ``--steps`` shared steps;
- ``peft``: a plain PEFT LoRA loop with identical settings (same base, quantization, LoRA r/alpha/
  targets, compute dtype, checkpointing, AdamW, clipping): ``model(..., labels=...).loss``;
- ``dtype``: ``fp32``, ``bf16`` or ``auto`` (``train.compute-dtype``); ``ckpt``: activation
  checkpointing on; ``whole``: the whole batch in one pass (no ``train.micro-batch-size``
  pieces; by default both loops use the same pieces, ``--micro-batch-size``, 0 = auto);
  ``nodrop``: ``adapter.dropout = 0`` (what the LoRA dropout masks cost).

Each run is a fresh subprocess (so peak RSS is its own), and ``--repeats`` rounds run every
configuration once each in turn, so a slow spell on a shared machine hits all of them alike.
The first step of each run is a warm-up and is not timed.

    .venv/bin/python benchmarks/client_step.py [--steps 4] [--repeats 2] [--batch-size 4] \
        [--seq-len 256] [--configs client:fp32,client:bf16,peft:fp32,peft:bf16]
    # loss trajectories on real data (same seed and batches), fp32 against bf16:
    .venv/bin/python benchmarks/client_step.py --data real --steps 30 --repeats 1 \
        --configs client:fp32,client:bf16 --trajectory
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from itertools import islice

DEFAULT_CONFIGS = "client:bf16,peft:bf16,client:bf16:whole,peft:bf16:whole,client:fp32"
LEARNING_RATE = 3e-4


def _clock() -> tuple[float, float]:
    """Wall time and this process's CPU time (a work measure that holds on a busy machine)."""
    return time.perf_counter(), time.process_time()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    """Resident memory now (``peak_rss_mb`` is a high-water mark, loading included)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def _batches(args, tokenizer):
    """Synthetic 4 x 256 batches (the response half labelled), or real shuffled task data."""
    import torch

    from client.batching import Batch, batch_stream, encode_all
    from codetasks.examples import TASK_NAMES
    from codetasks.loading import load_task

    if args.data == "real":
        examples = [e for task in TASK_NAMES for e in load_task(task, "train", limit=64)]
        items = encode_all(tokenizer, examples, args.seq_len)
        return batch_stream(items, args.batch_size, tokenizer.pad_token_id, seed=args.seed)
    ids = torch.randint(100, 40000, (args.batch_size, args.seq_len),
                        generator=torch.Generator().manual_seed(args.seed))  # fmt: skip
    labels = ids.clone()
    labels[:, : args.seq_len // 2] = -100
    batch = Batch(ids, torch.ones_like(ids), labels, ("generation",) * args.batch_size)
    return iter(lambda: batch, None)


def _client_losses(model, batches, steps: int, stamps: list[float], micro: int) -> list[float]:
    from client.train import Phase, train
    from colora.adapter import personal_parameters, shared_parameters

    phases = [
        Phase("sigma", personal_parameters(model), 1, 1e-3),
        Phase("shared", shared_parameters(model), steps, LEARNING_RATE),
    ]
    step = lambda *_: stamps.append(_clock())  # noqa: E731
    result = train(model, batches, phases, micro_batch_size=micro, on_step=step)
    return result.step_losses


def _peft_losses(model, batches, steps: int, stamps: list[float], micro: int) -> list[float]:
    """The plain loop a PEFT user writes: HF's own loss over the full logits, AdamW; with
    ``micro`` > 0, gradient accumulation over pieces of ``micro`` examples, each piece's token
    mean weighted by its share of the batch's labelled tokens (HF's loss is a token mean)."""
    import torch

    from client.train import split_batch
    from colora import precision

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=0.0)
    model.train()
    losses = []
    for batch in islice(batches, steps + 1):
        total, loss = (batch.labels[:, 1:] != -100).sum(), 0.0
        for piece in split_batch(batch, micro):
            with precision.autocast(model):
                piece_loss = model(input_ids=piece.input_ids, attention_mask=piece.attention_mask,
                                   labels=piece.labels).loss  # fmt: skip
            share = (piece.labels[:, 1:] != -100).sum() / total
            (piece_loss * share).backward()
            loss += (piece_loss * share).item()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss)
        stamps.append(_clock())
    return losses


def _one(config: str, args) -> dict:
    import torch
    from peft import get_peft_model

    from client.train import resolve_micro_batch_size
    from colora import precision
    from colora.adapter import attach_adapters, lora_config
    from colora.base_model import device, load_base_model, load_tokenizer
    from runconfig.schema import AdapterSettings, ModelSettings

    kind, dtype, *flags = config.split(":")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    spec = ModelSettings(source="bundled", quantization=args.quantization)
    base = load_base_model(spec, compute_dtype=dtype, gradient_checkpointing="ckpt" in flags)
    settings = AdapterSettings(dropout=0.0) if "nodrop" in flags else AdapterSettings()
    if kind == "client":
        model = attach_adapters(base, settings, seed=args.seed)
    else:
        model = get_peft_model(base, lora_config(settings))
    rss_loaded = _rss_mb()
    batches = _batches(args, load_tokenizer(spec))
    rss_ready = _current_rss_mb()
    stamps: list[tuple[float, float]] = []
    run = _client_losses if kind == "client" else _peft_losses
    micro = 0 if "whole" in flags else resolve_micro_batch_size(args.micro_batch_size, device())
    losses = run(model, batches, args.steps, stamps, micro)
    (wall0, cpu0), (wall1, cpu1) = stamps[0], stamps[-1]  # after the untimed warm-up step
    seconds, cpu_seconds = (wall1 - wall0) / args.steps, (cpu1 - cpu0) / args.steps
    row = {
        "config": config,
        "quantization": args.quantization,
        "compute_dtype": str(precision.of(base)).removeprefix("torch."),
        "data": args.data,
        "s_per_step": seconds,
        "cpu_s_per_step": cpu_seconds,
        "tokens_per_s": args.batch_size * args.seq_len / seconds,
        "peak_rss_mb": _rss_mb(),
        "rss_after_load_mb": rss_loaded,
        "rss_ready_mb": rss_ready,
        "loss_first": losses[1],
        "loss_last": losses[-1],
        "threads": torch.get_num_threads(),
        "micro_batch_size": micro or args.batch_size,
    }
    if args.trajectory:
        row["losses"] = losses[1:]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps after one warm-up")
    parser.add_argument("--repeats", type=int, default=2, help="round-robin rounds")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--quantization", choices=["nf4", "none"], default="nf4")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated")
    parser.add_argument("--data", choices=["synthetic", "real"], default="synthetic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--micro-batch-size", type=int, default=0, help="0 = auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = default")
    parser.add_argument("--trajectory", action="store_true", help="print every step's loss")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(args.one, args)))
        return
    forwarded = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                 if k not in ("one", "configs", "repeats", "trajectory")]  # fmt: skip
    forwarded += ["--trajectory"] if args.trajectory else []
    for _ in range(args.repeats):
        for config in args.configs.split(","):
            cmd = [sys.executable, __file__, *forwarded, "--one", config]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            print(out.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
