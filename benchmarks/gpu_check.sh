#!/usr/bin/env bash
# One command for a machine with a CUDA GPU: the GPU tests, the client-step benchmark, and a
# 4-client x 3-round federation on the bundled model with the 4 clients sharing one GPU
# (gpus-per-client = 0.25). Prints the figures the README records.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, after `make setup`
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-$(mktemp -d)}
DATA_ROOT=${DATA_ROOT:-$PWD/../shared/data}  # the offline data, as for `make run`

"$PY" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; \
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)'

echo "== GPU tests (marker gpu)"
"$PY" -m pytest -m gpu -q -p no:cacheprovider \
  tests/colora/test_gpu.py tests/codetasks/test_generate_gpu.py tests/client/test_gpu_federation.py

echo "== client step, bundled model, batch 4 x 256 (JSON lines)"
"$PY" benchmarks/client_step.py --steps 8 --repeats 2 \
  --configs client:bf16,peft:bf16,client:fp32,peft:fp32,client:bf16:ckpt

echo "== generation speed"
"$PY" benchmarks/generation_speed.py --quantizations nf4,none --batch-sizes 1,16

echo "== 4 clients x 3 rounds on one GPU, bundled model"
"$PY" - "$OUT" "$DATA_ROOT" <<'PY'
import json, sys, time
from pathlib import Path

from server.run_dir import read_metrics
from simulations.engine import simulate

out = Path(sys.argv[1])
start = time.perf_counter()
simulate(
    {"output-dir": str(out), "run-name": "gpu4", "num-server-rounds": 3,
     "data.root": sys.argv[2], "data.partition": "iid",
     "strategy.min-train-nodes": 4, "strategy.min-available-nodes": 4},
    num_supernodes=4, gpus_per_client=0.25, ray_init_args={"num_gpus": 1},
)
for record in read_metrics(out / "gpu4"):
    train = record["train"]
    print(json.dumps({
        "round": record["round"], "seconds": round(record["seconds"], 1),
        "clients": len(train), "on_gpu": sum(e["train-on-gpu"] for e in train),
        "train_seconds": [round(e["train-seconds"], 1) for e in train],
        "eval_loss_by_task": record["eval_loss_by_task"],
    }))
print(json.dumps({"federation_seconds": round(time.perf_counter() - start, 1)}))
PY
