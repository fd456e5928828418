"""Deployment end to end: TLS, SuperNode authentication, private state, SecAgg+ with local DP,
and a killed SuperNode.

The SuperLink and each SuperNode run as separate processes on loopback, started with the
``deploy/`` scripts exactly as an operator would: certificates from ``gen_certs.sh``, keys from
``gen_node_keys.sh``, the allow-list filled by ``register_nodes.sh``, the run submitted by
``run.sh`` (``flwr run . <connection> --stream``). Each organisation reads one task from the
offline data root and keeps Sigma_k in its own state directory.

Flower 1.41 notices a dead SuperNode by its missing heartbeats: a node is offline 2 x 30 s after
its last heartbeat, and the SuperLink then answers the messages sent to it with a
NODE_UNAVAILABLE error reply, which ends the round without waiting for ``round-timeout``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from client.personal_store import PERSONAL_FILE, load_personal
from client.privacy import LEDGER_FILE
from server.run_dir import read_metrics
from tests.deployment.federation import LocalFederation, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

TASKS = {1: "generation", 2: "translation", 3: "summarization"}
TINY = [
    "model.source='tiny'",
    "train.max-train-examples=8",
    "train.eval-examples=2",
    "train.max-seq-length=128",
    "train.sigma-steps=1",
    "train.shared-steps=2",
    "train.batch-size=2",
    "round-timeout=400.0",  # a safety net only: dead nodes are detected within 60 s
    "eval.limit=2",  # generation metrics at the final round, kept short
    "eval.max-new-tokens=32",
]
RUN_TIMEOUT = 540


@pytest.fixture(scope="module")
def fed(tmp_path_factory, data_root):
    """Certificates, 4 key pairs (3 registered), a SuperLink and 3 SuperNodes, all online."""
    fed = LocalFederation(tmp_path_factory.mktemp("deploy"), data_root)
    try:
        fed.script("gen_certs.sh", str(fed.certs))
        fed.script("gen_node_keys.sh", str(fed.keys), "4")
        fed.start_superlink()
        fed.script("register_nodes.sh", *(str(fed.keys / f"node-{i}.pub") for i in TASKS))
        for client_id, task in TASKS.items():
            fed.start_node(client_id, task)
        fed.wait_online(3)
        yield fed
    finally:
        fed.stop()


def _finish(fed: LocalFederation, name: str, timeout: float = RUN_TIMEOUT) -> str:
    """Wait for ``run.sh`` and return its output; it exits 0 only for a completed run."""
    proc = fed.procs[f"run-{name}"]
    code = proc.wait(timeout=timeout)
    text = fed.log_text(f"run-{name}")
    assert code == 0, f"run {name} exited with {code}:\n{text[-4000:]}"
    return text


def _run_overrides(fed: LocalFederation, name: str, *extra: str) -> list[str]:
    return [*TINY, f"output-dir='{fed.root / 'server'}'", f"run-name='{name}'", *extra]


def _safetensors_keys(path: Path) -> list[str]:
    with safe_open(path, "np") as handle:
        return list(handle.keys())


def test_unregistered_supernode_is_refused(fed):
    proc = fed.start_node(4, "generation", must_live=False)  # key node-4 was never registered
    code = proc.wait(timeout=120)
    assert code != 0
    node_log = fed.log_text("node-4")
    assert "Failed to activate SuperNode" in node_log, node_log[-2000:]
    assert "No SuperNode found with the given public key" in fed.log_text("superlink")
    nodes = fed.nodes()
    assert len(nodes) == 3 and all(n["status"] == "online" for n in nodes)
    assert not (fed.state_dir(4) / PERSONAL_FILE).exists()


def test_two_rounds_over_tls_keep_personal_state_on_each_node(fed):
    fed.run(
        _run_overrides(fed, "tls", "num-server-rounds=2", "strategy.min-available-nodes=3"), "tls"
    )
    _finish(fed, "tls")
    run_dir = fed.root / "server" / "tls"
    rounds = read_metrics(run_dir)
    assert [r["round"] for r in rounds] == [1, 2]
    for record in rounds:
        assert not record.get("failed") and not record["rejected"]
        assert {e["client-id"] for e in record["train"]} == set(TASKS)  # node 4 never took part
        by_client = {e["client-id"]: e for e in record["train"]}
        for client_id, task in TASKS.items():  # each node read only its own task
            assert [k for k in by_client[client_id] if k.startswith("num-examples.")] == [
                f"num-examples.{task}"
            ]

    # Sigma_k lives on each organisation's disk, after round 2, and differs between them.
    sigmas = {}
    for client_id in TASKS:
        stored = load_personal(fed.state_dir(client_id) / PERSONAL_FILE)
        assert stored is not None and stored[1] == 2
        sigmas[client_id] = stored[0]
    assert not all(torch.equal(sigmas[1][k], sigmas[2][k]) for k in sigmas[1]), (
        "two organisations hold the same Sigma_k"
    )

    # Nothing private reached the server: every tensor file it holds has only LoRA A/B keys.
    personal_keys = set(sigmas[1])
    server_files = [
        p for side in (fed.root / "server", fed.link_home) for p in side.rglob("*.safetensors")
    ]
    assert run_dir / "checkpoint" / "arrays.safetensors" in server_files
    assert run_dir / "shared_adapter" / "adapter_model.safetensors" in server_files
    for path in server_files:
        assert path.name != PERSONAL_FILE, path
        keys = _safetensors_keys(path)
        assert all(".lora_A." in k or ".lora_B." in k for k in keys), (path, keys)
        assert not personal_keys & set(keys)
    assert not list((fed.root / "server").rglob("clients"))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model.source"] == "tiny" and config["train.sigma-steps"] == 1


def test_secure_aggregation_with_local_dp_over_tls(fed):
    overrides = [
        "num-server-rounds=1",
        "strategy.min-available-nodes=3",
        "strategy.min-train-nodes=3",
        "privacy.secure-aggregation=true",
        "privacy.dp-clip-norm=0.05",
        "privacy.dp-epsilon=0.5",
    ]
    fed.run(_run_overrides(fed, "secagg", *overrides), "secagg")
    _finish(fed, "secagg")
    (record,) = read_metrics(fed.root / "server" / "secagg")
    assert not record.get("failed") and not record["rejected"]
    assert {e["client-id"] for e in record["train"]} == set(TASKS)
    assert record["privacy"]["epsilon_round"] == 0.5
    # The ledger of the (epsilon, delta) spent lives on each organisation's own disk.
    for client_id in TASKS:
        ledger = json.loads((fed.state_dir(client_id) / LEDGER_FILE).read_text())
        assert ledger == {"1": [0.5, 1e-05]}
    assert not list((fed.root / "server").rglob(LEDGER_FILE))


def _kill_node_3_during_round_1(fed: LocalFederation, offset: int) -> None:
    """Wait until SuperNode 3 has taken its round-1 train message, then ``kill -9`` it."""
    wait_for(
        lambda: "Receiving: train message" in fed.log_text("node-3", offset),
        300,
        "node 3 to receive its round-1 train message",
    )
    fed.kill("node-3")


def _restart_node_3(fed: LocalFederation) -> None:
    # The node re-activates with its key once the SuperLink has marked it offline.
    fed.start_node(3, TASKS[3])
    fed.wait_online(3, timeout=180)


def test_killed_supernode_round_survives_or_fails_clearly(fed):
    # min-train-nodes = 2: round 1 completes with the two nodes that answered.
    offset = len(fed.log_text("node-3"))
    fed.run(
        _run_overrides(fed, "kill-min2", "num-server-rounds=1", "strategy.min-train-nodes=2"),
        "kill-min2",
    )
    _kill_node_3_during_round_1(fed, offset)
    _finish(fed, "kill-min2")
    (record,) = read_metrics(fed.root / "server" / "kill-min2")
    assert not record.get("failed")
    assert sorted(e["client-id"] for e in record["train"]) == [1, 2]
    assert len(record["rejected"]) == 1 and "Node Unavailable" in record["rejected"][0]["reason"]
    assert sorted(e["client-id"] for e in record["eval"]) == [1, 2]

    # min-train-nodes = 3: round 1 fails with a clear message; the run goes on to round 2 once
    # the organisation restarts its SuperNode.
    _restart_node_3(fed)
    offset = len(fed.log_text("node-3"))
    run_dir = fed.root / "server" / "kill-min3"
    fed.run(
        _run_overrides(
            fed,
            "kill-min3",
            "num-server-rounds=2",
            "strategy.min-train-nodes=3",
            "strategy.min-available-nodes=3",  # must be >= min-train-nodes
        ),
        "kill-min3",
    )
    _kill_node_3_during_round_1(fed, offset)
    wait_for(lambda: read_metrics(run_dir), 300, "round 1 to end")
    _restart_node_3(fed)
    text = _finish(fed, "kill-min3")
    failed, second = read_metrics(run_dir)
    assert failed["round"] == 1 and failed["failed"] is True
    assert "only 2 of 3 clients" in failed["reason"]
    assert "min-train-nodes = 3" in failed["reason"]
    assert "round 1 failed: only 2 of 3 clients" in text  # the ERROR line in the server log
    assert second["round"] == 2 and not second.get("failed")
    assert sorted(e["client-id"] for e in second["train"]) == [1, 2, 3]
