"""Benchmark each strategy's server aggregation on the bundled model's real shared-adapter size.

The layout is computed, not loaded: SmolLM2-135M has 30 layers, hidden 576, intermediate 1536,
9 query heads and 3 key/value heads of dim 64, and LoRA r = 8 sits on q, k, v, o, gate, up and
down, so the shared adapter holds 2,442,240 float32 values (9.77 MB). For K clients the script
runs rounds 1 and 2 as ``server.federation`` does: ``configure_train`` on a fake grid, K
hand-built Flower reply Messages (what was sent plus noise, already serialised; building them is
not timed), then ``aggregate_train``. The table reports round 2, the steady state of a long run;
round 1 is printed too. It differs where a strategy does one-off work (``clustered`` splits in
round 1) and because fresh memory is slow in this sandbox VM: faulting in a new gigabyte takes
~4 s (pages come back from the host), which the personalised strategies pay for their reused
K x D buffers in round 1 only.

Multi-threaded BLAS collapses when the 2 cores are shared with other jobs (two OpenBLAS threads
ran a 1536x80x576 GEMM at 1.5-10 GFLOP/s against 36 on one thread), so the thread setting is
printed: compare ``OPENBLAS_NUM_THREADS=1`` with the default.

K x 9.77 MB of replies must sit in memory twice (serialised, then viewed or copied), which does
not fit this machine for K = 1000; by default K > 100 is measured on the first 3 of the 30
layers (a tenth of the adapter) and the time is scaled by 10 to estimate the full size. Every
step is linear in the adapter size except the clustering itself (O(K^3) at most), so the
estimate is an upper bound. The table marks the scaled column.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/aggregation_speed.py [--clients 10,100,1000]
        [--memory]

Each (strategy, clients, round) is also printed as one JSON line: seconds, peak_bytes (the
peak of tracemalloc during ``aggregate_train`` above what was live before it, with --memory;
-1 otherwise), input_bytes (K x D x 4, the replies' tensors) and their ratio, and
state_seconds: ``strategy.state_arrays()`` called right after, as the server's checkpoint does
every round (FLoRA and FedEx-LoRA fold their merged term on a worker thread; reading the state
waits for it, so aggregate + state is their whole server cost when nothing overlaps the fold).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
import tracemalloc
from collections.abc import Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

from colora.wire import to_numpy, to_record
from runconfig.schema import parse_run_config
from strategies.registry import STRATEGIES, build_strategy

LAYERS, HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, HEAD_DIM, RANK = 30, 576, 1536, 9, 3, 64, 8
TASKS = ("generation", "translation", "summarization")


def smollm2_shapes(layers: int = LAYERS, rank: int = RANK) -> dict[str, tuple[int, int]]:
    """PEFT keys -> shapes of SmolLM2-135M's shared adapter (A: r x d_in, B: d_out x r)."""
    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    modules = {
        "self_attn.q_proj": (HIDDEN, q),
        "self_attn.k_proj": (HIDDEN, kv),
        "self_attn.v_proj": (HIDDEN, kv),
        "self_attn.o_proj": (q, HIDDEN),
        "mlp.gate_proj": (HIDDEN, INTERMEDIATE),
        "mlp.up_proj": (HIDDEN, INTERMEDIATE),
        "mlp.down_proj": (INTERMEDIATE, HIDDEN),
    }
    shapes = {}
    for layer in range(layers):
        for module, (d_in, d_out) in modules.items():
            prefix = f"base_model.model.model.layers.{layer}.{module}"
            shapes[f"{prefix}.lora_A.weight"] = (rank, d_in)
            shapes[f"{prefix}.lora_B.weight"] = (d_out, rank)
    return shapes


def random_state(
    shapes: Mapping[str, tuple[int, ...]], rng: np.random.Generator, scale: float = 0.02
) -> dict[str, np.ndarray]:
    return {
        k: rng.standard_normal(s, dtype=np.float32) * np.float32(scale) for k, s in shapes.items()
    }


class FakeGrid:
    def __init__(self, nodes: int) -> None:
        self.nodes = list(range(1, nodes + 1))

    def get_node_ids(self) -> list[int]:
        return self.nodes


def set_task_identity() -> None:
    """Flower stamps new Messages with the process's task identity (the server's, here)."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID


def make_strategy(name: str, **params):
    flat = {"strategy.name": name, **{f"strategy.{k}": v for k, v in params.items()}}
    return build_strategy(parse_run_config(flat))


def client_reply(sent: Message, rng: np.random.Generator) -> Message:
    """What a client would send back: the arrays it was sent, moved by a random update, and
    the frozen-term round it now holds (FLoRA, FedEx-LoRA)."""
    node = sent.metadata.dst_node_id
    state = {
        k: v + rng.standard_normal(v.shape, dtype=np.float32) * np.float32(0.01)
        for k, v in to_numpy(sent.content["arrays"]).items()
    }
    task = TASKS[node % len(TASKS)]
    metrics = {
        "client-id": node - 1,
        "num-examples": 10 + node % 7,
        f"num-examples.{task}": 10 + node % 7,
        f"eval-loss.{task}": 1.0,
    }
    config = sent.content["config"]
    if "merge-round" in config:
        metrics["merge-round"] = config["merge-round"]
    return Message(
        content=RecordDict({"arrays": to_record(state), "metrics": MetricRecord(metrics)}),
        reply_to=sent,
    )


def timed(call, memory: bool):
    """(result, seconds, peak bytes allocated during the call above what was live before, or
    -1 when ``memory`` is off). tracemalloc sees numpy's buffers but slows Python-heavy code,
    so seconds and memory come from separate runs."""
    if memory:
        tracemalloc.start()
        tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0] if memory else 0
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] - before if memory else -1
    if memory:
        tracemalloc.stop()
    return result, seconds, peak


def run_rounds(
    name: str, arrays: ArrayRecord, clients: int, seed: int = 0, memory: bool = False
) -> dict[str, float]:
    """Rounds 1 and 2 as the server loop runs them; returns the timed parts in seconds and,
    with ``memory``, the peak working memory of ``aggregate_train`` (tracemalloc)."""
    strategy = make_strategy(name, **{"min-train-nodes": 1})
    rng, grid = np.random.default_rng(seed), FakeGrid(clients)
    timings: dict[str, float] = {}
    for server_round, label in ((1, "first"), (2, "steady")):
        start = time.perf_counter()
        sent = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
        timings[f"configure-{label}"] = time.perf_counter() - start
        replies = [client_reply(m, rng) for m in sent]
        del sent
        gc.collect()
        (arrays, _), timings[label], timings[f"peak-{label}"] = timed(
            lambda replies=replies, r=server_round: strategy.aggregate_train(r, replies), memory
        )
        # The server checkpoints the strategy's state right after (federation._save): for
        # FLoRA/FedEx-LoRA that waits for the merged term's fold, which runs off the
        # aggregation's path (strategies.merged_term).
        start = time.perf_counter()
        strategy.state_arrays()
        timings[f"state-{label}"] = time.perf_counter() - start
        del replies
        gc.collect()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="10,100,1000")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument(
        "--full-size-max-clients",
        type=int,
        default=100,
        help="above this K, measure on --subset-layers layers and scale",
    )
    parser.add_argument("--subset-layers", type=int, default=3)
    parser.add_argument(
        "--memory",
        action="store_true",
        help="trace aggregate_train's peak memory (tracemalloc; slows the timings)",
    )
    args = parser.parse_args()
    set_task_identity()
    counts = [int(k) for k in args.clients.split(",")]
    names = args.strategies.split(",")
    full = smollm2_shapes()
    size = sum(a * b for a, b in full.values())
    print(
        f"SmolLM2-135M shared adapter: {len(full)} tensors, {size:,} float32 values "
        f"({4 * size / 1e6:.2f} MB) per client; {LAYERS} layers, r = {RANK}; "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
        f"{os.cpu_count()} CPUs"
    )
    results: dict[tuple[str, int], dict[str, float]] = {}
    for k in counts:
        layers = LAYERS if k <= args.full_size_max_clients else args.subset_layers
        arrays = to_record(random_state(smollm2_shapes(layers), np.random.default_rng(1)))
        for name in names:
            timing = run_rounds(name, arrays, k, memory=args.memory)
            results[name, k] = {key: v * LAYERS / layers for key, v in timing.items()}
            _print_json(name, k, layers, timing)
            print(
                f"  measured {name:>20} K={k:<5} layers {layers:>2}: aggregate round 1 "
                f"{timing['first']:.3f} s, round 2 {timing['steady']:.3f} s; configure round 2 "
                f"{timing['configure-steady']:.3f} s; state round 1 {timing['state-first']:.3f} "
                f"s, round 2 {timing['state-steady']:.3f} s",
                flush=True,
            )
            gc.collect()
    _print_table(names, counts, results, args)


def _print_json(name: str, clients: int, layers: int, timing: dict[str, float]) -> None:
    """One JSON line per (strategy, clients, round): measured at ``layers`` of the adapter."""
    size = sum(a * b for a, b in smollm2_shapes(layers).values())
    for server_round, label in ((1, "first"), (2, "steady")):
        line = {
            "strategy": name,
            "clients": clients,
            "round": server_round,
            "seconds": round(timing[label], 4),
            "peak_bytes": int(timing[f"peak-{label}"]),  # -1: not traced (no --memory)
            "input_bytes": 4 * size * clients,
            "peak_over_input": round(max(timing[f"peak-{label}"], 0) / (4 * size * clients), 3),
            "adapter_values": size,
            "layers": layers,
            "configure_seconds": round(timing[f"configure-{label}"], 4),
            "state_seconds": round(timing[f"state-{label}"], 4),  # strategy.state_arrays()
        }
        print(json.dumps(line), flush=True)


def _print_table(names, counts, results, args) -> None:
    scaled = [k for k in counts if k > args.full_size_max_clients]
    mid = counts[min(1, len(counts) - 1)]
    head = "".join(f"{f'K={k}' + ('*' if k in scaled else ''):>10}" for k in counts)
    print(
        f"\nserver seconds per round at the full SmolLM2 adapter size (round 2)\n"
        f"{'':>20}{'aggregate_train':^{10 * len(counts)}}{'configure_train':>17}\n"
        f"{'strategy':>20}{head}{f'K={mid}':>17}"
    )
    for name in names:
        cells = "".join(f"{results[name, k]['steady']:>10.2f}" for k in counts)
        print(f"{name:>20}{cells}{results[name, mid]['configure-steady']:>17.2f}")
    if scaled:
        print(
            f"* measured on the first {args.subset_layers} of {LAYERS} layers and scaled by "
            f"{LAYERS / args.subset_layers:g} (an upper bound: the clustering is size-independent)"
        )
    print("configure_train builds one message per node where the strategy personalises.")


if __name__ == "__main__":
    main()
