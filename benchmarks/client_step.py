"""Benchmark one client's local training step on the bundled model: NF4 against fp32.

Each configuration runs in a fresh subprocess so peak RSS (``ru_maxrss``) belongs to that
configuration alone. Prints seconds per optimizer step (batch x tokens as configured), peak
memory, and the size of what travels (shared parameters) against the base model.

    .venv/bin/python benchmarks/client_step.py [--steps 4] [--batch-size 4] [--seq-len 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _one(quantization: str, steps: int, batch_size: int, seq_len: int) -> dict:
    import torch

    from client.batching import Batch
    from client.train import Phase, train
    from colora.adapter import attach_adapters, personal_parameters, shared_parameters
    from colora.base_model import load_base_model
    from runconfig.schema import AdapterSettings, ModelSettings

    torch.manual_seed(0)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    settings = AdapterSettings()
    base = load_base_model(ModelSettings(source="bundled", quantization=quantization))
    base_params = sum(p.numel() for p in base.parameters())
    weights_mb = base.get_memory_footprint() / 2**20
    model = attach_adapters(base, settings, seed=0)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ids = torch.randint(100, 40000, (batch_size, seq_len))
    labels = ids.clone()
    labels[:, : seq_len // 2] = -100
    batch = Batch(ids, torch.ones_like(ids), labels, ("generation",) * batch_size)
    shared = shared_parameters(model)
    phases = [
        Phase("sigma", personal_parameters(model), 1, 1e-3),
        Phase("shared", shared, steps, 3e-4),
    ]
    start = time.perf_counter()
    result = train(model, iter(lambda: batch, None), phases)
    seconds = time.perf_counter() - start
    return {
        "quantization": quantization,
        "s_per_step": seconds / (steps + 1),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_load_mb": rss_loaded / 1024,
        "rss_before_load_mb": rss_before / 1024,
        "base_params": base_params,
        "weights_mb": weights_mb,
        "shared_params": sum(p.numel() for p in shared),
        "personal_params": sum(p.numel() for p in personal_parameters(model)),
        "loss_first_last": [result.step_losses[0], result.step_losses[-1]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--one", choices=["nf4", "none"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(args.one, args.steps, args.batch_size, args.seq_len)))
        return
    rows = []
    for quant in ("nf4", "none"):
        cmd = [
            sys.executable,
            __file__,
            "--one",
            quant,
            "--steps",
            str(args.steps),
            "--batch-size",
            str(args.batch_size),
            "--seq-len",
            str(args.seq_len),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(
        f"bundled SmolLM2-135M-Instruct, batch {args.batch_size} x {args.seq_len} tokens, "
        f"{args.steps} shared steps + 1 sigma step, torch threads {_threads()}"
    )
    print(f"{'base':>6} {'s/step':>8} {'peak RSS MB':>12} {'RSS after load MB':>18}")
    for row in rows:
        print(
            f"{row['quantization']:>6} {row['s_per_step']:>8.2f} {row['peak_rss_mb']:>12.0f} "
            f"{row['rss_after_load_mb']:>18.0f}"
        )
    row = rows[1]  # NF4 packs two weights per element, so count parameters on fp32
    print(
        f"base parameters {row['base_params']:,}; shared (A,B) {row['shared_params']:,} "
        f"({100 * row['shared_params'] / row['base_params']:.2f}%, "
        f"{4 * row['shared_params'] / 1e6:.2f} MB fp32 per direction per client); "
        f"private Sigma_k {row['personal_params']:,}"
    )


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
