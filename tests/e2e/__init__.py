"""End-to-end runs through Flower's simulation engine on the tiny model."""

# The smallest run that still trains every phase: 3 clients, 2 rounds, 1 Sigma + 2 shared steps.
TINY_RUN = {
    "model.source": "tiny",
    "num-server-rounds": 2,
    "train.max-train-examples": 8,
    "train.eval-examples": 2,
    "train.max-seq-length": 128,
    "train.sigma-steps": 1,
    "train.shared-steps": 2,
    "train.batch-size": 2,
    "eval.every": 0,  # generation metrics have their own e2e test
}

# Ray sees one CPU, so one worker serves every simulated client in turn. Each worker imports
# torch, transformers and PEFT and loads the model before its first message (~15 CPU-s), and
# under `make test` both cores are already busy, so a second worker costs the suite CPU time
# without shortening the test. For tests about what a run computes; two workers sharing a run
# stay covered by test_colora_simulation, the fault tests and the runner's experiments.
ONE_WORKER = {"num_cpus": 1}
