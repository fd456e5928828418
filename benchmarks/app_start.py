"""What a fresh app process costs before its first message, for one or more source trees.

Flower's deployment starts a ``flwr-clientapp`` process for every message a SuperNode takes, and
its simulation engine a Ray worker per concurrent client, so this start-up is paid again and
again (and by every end-to-end test). Three steps, each timed in a fresh interpreter:

- ``import-client``: ``import client.client_app`` (Flower and the mods; since the handlers load
  lazily, what a process that never reaches the model pays: SecAgg+'s key stages, ``identify``);
- ``import-server``: ``import server.server_app``;
- ``client-data``: ``import client.client_app``, the handlers' imports (torch, transformers, PEFT,
  bitsandbytes: ``client_app.load_handlers``), the tiny model and one simulated client's examples
  (``client.runtime.model_runtime`` and ``client_data``, 3 by-task partitions of the offline data),
  what a ClientApp process does before it trains.

Trees alternate within each repeat (tree 1, tree 2, tree 1, ...), so a slow spell of this shared
machine hits them alike. CPU seconds (user + system, of the child) are the figure to compare on a
busy machine; wall seconds are printed too. One JSON line per tree, step and repeat.

    .venv/bin/python benchmarks/app_start.py [--tree DIR ...] [--repeats 3] [--steps a,b]

A tree is a checkout of this repository (``git worktree add /tmp/before <rev>``); the default is
this one. Every tree runs with this checkout's interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from codetasks.loading import DEFAULT_DATA_ROOT

REPO = Path(__file__).resolve().parents[1]

CLIENT_DATA = """
import sys, time
import client.client_app
# what the first train or evaluate message imports (older trees import it with the module)
getattr(client.client_app, "load_handlers", lambda: None)()
from client.runtime import client_data, model_runtime
from runconfig import parse_run_config
cfg = parse_run_config({
    "model.source": "tiny", "data.root": sys.argv[1], "train.max-train-examples": 8,
    "train.eval-examples": 2, "train.max-seq-length": 128,
})
start = time.process_time()
runtime = model_runtime(cfg)
client_data(cfg, {"partition-id": 0, "num-partitions": 3}, runtime.tokenizer)
print(time.process_time() - start)
"""
STEPS = {
    "import-client": "import client.client_app",
    "import-server": "import server.server_app",
    "client-data": CLIENT_DATA,
}


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(tree: Path, step: str) -> dict:
    """One fresh interpreter running ``step`` in ``tree``: its CPU and wall seconds."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    before, start = _child_cpu(), time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", STEPS[step], str(DEFAULT_DATA_ROOT)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall, cpu = time.perf_counter() - start, _child_cpu() - before
    if done.returncode != 0:
        raise SystemExit(f"{step} failed in {tree}:\n{done.stderr[-2000:]}")
    row = {"tree": str(tree), "step": step, "cpu_seconds": round(cpu, 2), "wall_seconds": wall}
    if step == "client-data":  # the model and data alone, without the import before them
        row["step_cpu_seconds"] = round(float(done.stdout.split()[-1]), 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, action="append", help="a checkout (repeatable)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated, of: %(default)s")
    args = parser.parse_args()
    steps = args.steps.split(",")
    if unknown := set(steps) - set(STEPS):
        parser.error(f"unknown steps {sorted(unknown)}; valid: {', '.join(STEPS)}")
    trees = [tree.resolve() for tree in args.tree or [REPO]]
    for repeat in range(args.repeats):
        for step in steps:
            for tree in trees:
                print(json.dumps({"repeat": repeat, **measure(tree, step)}), flush=True)


if __name__ == "__main__":
    main()
