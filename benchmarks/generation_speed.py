"""Benchmark batched generation speed on the bundled model: batch 1 against batch 16.

For batch size b, generates replies to the first ``--batches`` x b MBPP validation problems
(chat-template prompts, greedy decoding, left padding, KV cache; see ``colora.generate``)
with at most ``--max-new-tokens`` new tokens each, and prints new tokens per second (new tokens
generated, up to each reply's stop token, divided by wall time) for each base-model
quantization and batch size. Each configuration first runs one untimed warm-up batch.

    .venv/bin/python benchmarks/generation_speed.py [--batches 2] [--max-new-tokens 64] \
        [--quantizations none,nf4] [--batch-sizes 1,16] [--threads N] [--compute-dtype auto]
"""

from __future__ import annotations

import argparse
import time

import torch

from codetasks.loading import load_task
from colora.base_model import load_base_model, load_tokenizer
from colora.generate import generate_with_stats
from runconfig.schema import ModelSettings


def measure(
    quantization: str, batch_sizes: list[int], batches: int, max_new: int, dtype: str = "auto"
) -> list[dict]:
    """One row per batch size for the bundled model in ``quantization``."""
    settings = ModelSettings(source="bundled", quantization=quantization)
    model = load_base_model(settings, inference_only=True, compute_dtype=dtype)
    tokenizer = load_tokenizer(settings)
    problems = load_task("generation", "valid")
    rows = []
    for batch_size in batch_sizes:
        examples = problems[: batch_size * batches]
        warmup = problems[-batch_size:]  # other prompts than the timed ones
        generate_with_stats(model, tokenizer, warmup, batch_size=batch_size,
                            max_new_tokens=8, progress=False)  # fmt: skip
        start = time.perf_counter()
        result = generate_with_stats(model, tokenizer, examples, batch_size=batch_size,
                                     max_new_tokens=max_new, progress=False)  # fmt: skip
        seconds = time.perf_counter() - start
        rows.append({
            "quantization": quantization, "batch_size": batch_size, "prompts": len(examples),
            "new_tokens": result.new_tokens, "seconds": seconds,
            "tokens_per_second": result.new_tokens / seconds,
        })  # fmt: skip
        print(_format(rows[-1]), flush=True)
    return rows


def _format(row: dict) -> str:
    return (
        f"| {row['quantization']:<5} | {row['batch_size']:>5} | {row['prompts']:>7} "
        f"| {row['new_tokens']:>10} | {row['seconds']:>8.1f} | {row['tokens_per_second']:>10.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2, help="timed batches per batch size")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="cap per reply")
    parser.add_argument("--quantizations", default="none,nf4", help="comma-separated")
    parser.add_argument("--batch-sizes", default="1,16", help="comma-separated")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--compute-dtype", default="auto", choices=["auto", "fp32", "bf16"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    print(f"torch threads: {torch.get_num_threads()}; bundled SmolLM2-135M-Instruct, greedy, "
          f"compute dtype {args.compute_dtype}")  # fmt: skip
    print("| quant | batch | prompts | new tokens | seconds | tokens/s |")
    print("|---|---|---|---|---|---|")
    for quantization in args.quantizations.split(","):
        measure(quantization, batch_sizes, args.batches, args.max_new_tokens, args.compute_dtype)


if __name__ == "__main__":
    main()
