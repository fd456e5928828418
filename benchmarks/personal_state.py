"""What similarity-weighted holds between rounds when many registered clients take turns.

similarity-weighted keeps each client's next adapter (its mixture) until the client is sampled
again. With N registered clients and K sampled per round, holding them all in memory grows to
N x D float32 and every checkpoint serialises all N; since issue 13 the server keeps only the
last round's K in memory and the others in the run directory (``strategies.vector_store``).
This runs R rounds at the bundled adapter's size (D = 2,442,240, computed as in
``aggregation_speed.py``), sampling clients in turn (round r takes the next K of N), once with
the store in memory only (no directory: what the strategy did before) and once with a
directory, and prints a JSON line per (mode, round):

- ``held_bytes``: tracemalloc's count of what is still allocated after the round and its
  checkpoint state, replies freed (the strategy's memory between rounds);
- ``state_bytes``: the arrays the checkpoint serialises (``state_arrays()``);
- ``disk_bytes``: the store's files; ``in_memory``/``known``: vectors held in memory/in all;
- ``aggregate_seconds``, ``state_seconds``: ``aggregate_train`` and ``state_arrays()``.

    .venv/bin/python benchmarks/personal_state.py [--registered 60] [--per-round 10]
        [--rounds 8] [--layers 30]
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from aggregation_speed import (  # the sibling script: its directory is on sys.path
    client_reply,
    make_strategy,
    random_state,
    set_task_identity,
    smollm2_shapes,
)
from flwr.app import ConfigRecord

from colora.wire import to_record


class TurnGrid:
    """Node ids 1..N; ``turn(r)`` makes round r's K nodes the available ones."""

    def __init__(self, registered: int, per_round: int) -> None:
        self.registered, self.per_round, self.nodes = registered, per_round, []

    def turn(self, server_round: int) -> None:
        first = (server_round - 1) * self.per_round
        self.nodes = [(first + i) % self.registered + 1 for i in range(self.per_round)]

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)


def run(args: argparse.Namespace, directory: Path | None) -> None:
    mode = "memory" if directory is None else "disk"
    strategy = make_strategy("similarity-weighted", **{"min-train-nodes": 1})
    if directory is not None:
        strategy.attach(directory, None)
    shapes = smollm2_shapes(args.layers)
    arrays = to_record(random_state(shapes, np.random.default_rng(0)))
    grid, rng = TurnGrid(args.registered, args.per_round), np.random.default_rng(1)
    gc.collect()
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    for server_round in range(1, args.rounds + 1):
        grid.turn(server_round)
        sent = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
        replies = [client_reply(m, rng) for m in sent]
        del sent
        start = time.perf_counter()
        arrays, _ = strategy.aggregate_train(server_round, replies)
        aggregate = time.perf_counter() - start
        start = time.perf_counter()
        state = strategy.state_arrays()
        state_seconds = time.perf_counter() - start
        state_bytes = sum(int(np.asarray(v).nbytes) for v in state.values())
        del replies, state
        gc.collect()
        store = strategy.mixtures
        files = list((directory / "mixtures").glob("*.npy")) if directory else []
        line = {
            "benchmark": "personal_state",
            "mode": mode,
            "round": server_round,
            "registered": args.registered,
            "per_round": args.per_round,
            "adapter_values": sum(int(np.prod(s)) for s in shapes.values()),
            "known": len(store),
            "in_memory": store.in_memory(),
            "held_bytes": tracemalloc.get_traced_memory()[0] - baseline,
            "state_bytes": state_bytes,
            "disk_bytes": sum(p.stat().st_size for p in files),
            "aggregate_seconds": round(aggregate, 3),
            "state_seconds": round(state_seconds, 3),
        }
        print(json.dumps(line), flush=True)
    tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registered", type=int, default=60)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--layers", type=int, default=30, help="of SmolLM2's 30 (D scales)")
    args = parser.parse_args()
    set_task_identity()
    run(args, None)
    with tempfile.TemporaryDirectory(prefix="personal-state-") as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
