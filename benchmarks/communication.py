"""Bytes per client per round of every strategy, against the FlowerTune code baseline.

Ours: the bundled SmolLM2-135M with LoRA r = 8 on q, k, v, o, gate, up and down (2,442,240
float32 values, 9.77 MB per adapter; layout computed in ``aggregation_speed.smollm2_shapes``).
The strategies run rounds 1 and 2 as ``server.federation`` does, on K clients per round with
hand-built replies, and the table reports round 2 (the steady state): the tensor bytes of every
ArrayRecord in each node's train message, its evaluate message, and its train reply, exactly as
``metrics.jsonl`` counts them.

FlowerTune's code baseline: Mistral-7B, 32 layers, hidden 4096, kv dim 1024, LoRA r = 32 on
q_proj and v_proj, everything shared; the adapter goes down and comes back each round and
evaluation happens after training, so it has no evaluate traffic. Float32 on the wire in both.

    .venv/bin/python benchmarks/communication.py [--clients 2,10]
"""

from __future__ import annotations

import argparse

import numpy as np
from aggregation_speed import (  # the sibling script: its directory is on sys.path
    FakeGrid,
    client_reply,
    make_strategy,
    random_state,
    set_task_identity,
    smollm2_shapes,
)
from flwr.app import ConfigRecord, Message

from colora.wire import payload_bytes, to_record
from strategies.registry import STRATEGIES

MB = 1e6


def flowertune_adapter_bytes(
    layers: int = 32, hidden: int = 4096, kv: int = 1024, rank: int = 32
) -> int:
    q = rank * hidden + hidden * rank  # A: r x 4096, B: 4096 x r
    v = rank * hidden + kv * rank  # A: r x 4096, B: 1024 x r
    return 4 * layers * (q + v)


def _bytes(message: Message) -> int:
    return sum(payload_bytes(r) for r in message.content.array_records.values())


def steady_state(name: str, clients: int) -> dict[str, float]:
    """Mean bytes per client in round 2: train message, evaluate message, train reply."""
    strategy, grid = make_strategy(name, **{"min-train-nodes": 1}), FakeGrid(clients)
    rng = np.random.default_rng(0)
    arrays = to_record(random_state(smollm2_shapes(), rng))
    for server_round in (1, 2):
        sent = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
        replies = [client_reply(m, rng) for m in sent]
        arrays, _ = strategy.aggregate_train(server_round, replies)
        evaluate = list(strategy.configure_evaluate(server_round, arrays, ConfigRecord(), grid))
        strategy.aggregate_evaluate(server_round, [client_reply(m, rng) for m in evaluate])
    return {  # per participating client
        "down": float(np.mean([_bytes(m) for m in sent])),
        "eval": float(np.mean([_bytes(m) for m in evaluate])),
        "up": float(np.mean([_bytes(r) for r in replies])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="2,10", help="clients per round")
    args = parser.parse_args()
    set_task_identity()
    baseline = flowertune_adapter_bytes()
    base_round = 2 * baseline
    print(
        f"FlowerTune code baseline (Mistral-7B, r=32 on q,v): adapter {baseline / MB:.1f} MB "
        f"({baseline / 2**20:.1f} MiB); per client per round {base_round / MB:.1f} MB "
        f"(down + up, no evaluate traffic)"
    )
    for k in (int(c) for c in args.clients.split(",")):
        print(f"\nK = {k} clients per round, round 2 (steady state), MB per client")
        print(
            f"{'strategy':>20}{'train down':>12}{'eval down':>11}{'up':>9}{'total':>9}"
            f"{'vs FlowerTune':>15}"
        )
        for name in STRATEGIES:
            b = steady_state(name, k)
            total = b["down"] + b["eval"] + b["up"]
            print(
                f"{name:>20}{b['down'] / MB:>12.2f}{b['eval'] / MB:>11.2f}{b['up'] / MB:>9.2f}"
                f"{total / MB:>9.2f}{total / base_round:>14.3f}x",
                flush=True,
            )
    print(
        "\nPer participating client. centralized: the one pooled-data trainer (the other K - 1 "
        "nodes exchange nothing). local-only sends nothing. flora / fedex-lora: eval down "
        "carries the round's merged-term increment, of rank K*r resp. (K+1)*r; a node that "
        "missed it gets the dense term instead (catch-up, not steady state)."
    )


if __name__ == "__main__":
    main()
