"""Benchmark batched generation speed on the bundled model: batch 1 against batch 16.

For batch size b, generates replies to the first ``--batches`` x b MBPP validation problems
(chat-template prompts, greedy decoding, left padding, KV cache; see ``colora.generate``)
with at most ``--max-new-tokens`` new tokens each, and prints one JSON line per loop,
base-model quantization and batch size: new tokens (up to each reply's stop token), seconds,
tokens/s and prompts/s. ``--loops ours,hf`` times this project's decoding loop (finished rows
leave the batch) against transformers' ``generate`` on the same model and prompts; ours also
stops a reply whose answer can no longer change, so prompts/s is the figure to compare. Each
configuration first runs one untimed warm-up batch.

    .venv/bin/python benchmarks/generation_speed.py [--batches 2] [--max-new-tokens 64] \
        [--quantizations none,nf4] [--batch-sizes 1,16] [--threads N] [--compute-dtype auto] \
        [--loops ours,hf]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from codetasks.loading import load_task
from colora.base_model import load_base_model, load_tokenizer
from colora.generate import chat_prompt, generate_with_stats, stop_token_ids
from runconfig.schema import ModelSettings


def _hf_generate(model, tokenizer, examples, batch_size: int, max_new: int) -> int:
    """The loop before issue 12: transformers' ``generate`` per batch (greedy, KV cache),
    which runs every row to the longest reply's end; returns the new tokens up to each stop."""
    stops = stop_token_ids(tokenizer)
    prompts = [chat_prompt(tokenizer, example) for example in examples]
    new_tokens = 0
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            inputs = tokenizer(batch, return_tensors="pt", padding=True, padding_side="left",
                               add_special_tokens=False)  # fmt: skip
            out = model.generate(**inputs, max_new_tokens=max_new, do_sample=False,
                                 use_cache=True, eos_token_id=stops,
                                 pad_token_id=tokenizer.pad_token_id)  # fmt: skip
            for row in out[:, inputs["input_ids"].shape[1] :].tolist():
                ends = [i for i, token in enumerate(row) if token in stops]
                new_tokens += ends[0] + 1 if ends else len(row)
    return new_tokens


def _ours(model, tokenizer, examples, batch_size: int, max_new: int) -> int:
    return generate_with_stats(model, tokenizer, examples, batch_size=batch_size,
                               max_new_tokens=max_new, progress=False).new_tokens  # fmt: skip


LOOPS = {"ours": _ours, "hf": _hf_generate}


def measure(
    quantization: str,
    batch_sizes: list[int],
    batches: int,
    max_new: int,
    dtype: str = "auto",
    loops: tuple[str, ...] = ("ours",),
) -> list[dict]:
    """One JSON row per batch size and loop for the bundled model in ``quantization``; the
    loops alternate on the same prompts, so a slow spell of a shared machine hits both."""
    settings = ModelSettings(source="bundled", quantization=quantization)
    # One model per loop: transformers' generate lets bitsandbytes repack the NF4 weights in
    # place for its CPU kernel on its first pass, and a shared model would then hand our loop
    # packed layers (which it leaves alone) in every later measurement.
    models = {loop: load_base_model(settings, inference_only=True, compute_dtype=dtype)
              for loop in loops}  # fmt: skip
    tokenizer = load_tokenizer(settings)
    problems = load_task("generation", "valid")
    rows = []
    for batch_size in batch_sizes:
        examples = problems[: batch_size * batches]
        for loop in loops:
            warmup = problems[-batch_size:]  # other prompts than the timed ones
            LOOPS[loop](models[loop], tokenizer, warmup, batch_size, 8)
            start = time.perf_counter()
            new_tokens = LOOPS[loop](models[loop], tokenizer, examples, batch_size, max_new)
            seconds = time.perf_counter() - start
            rows.append({
                "loop": loop, "quantization": quantization, "batch_size": batch_size,
                "prompts": len(examples), "new_tokens": new_tokens, "seconds": seconds,
                "tokens_per_second": new_tokens / seconds,
                "prompts_per_second": len(examples) / seconds,
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2, help="timed batches per batch size")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="cap per reply")
    parser.add_argument("--quantizations", default="none,nf4", help="comma-separated")
    parser.add_argument("--batch-sizes", default="1,16", help="comma-separated")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--compute-dtype", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--loops", default="ours,hf", help="ours (colora.generate), hf (generate)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    loops = tuple(args.loops.split(","))
    for quantization in args.quantizations.split(","):
        measure(quantization, batch_sizes, args.batches, args.max_new_tokens, args.compute_dtype,
                loops)  # fmt: skip


if __name__ == "__main__":
    main()
