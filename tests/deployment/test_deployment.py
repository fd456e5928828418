"""Deployment end to end: TLS, SuperNode authentication, a Fleet-only public face, private
state, SecAgg+ with local DP, and a killed SuperNode.

The SuperLink and each SuperNode run as separate processes on loopback, started with the
``deploy/`` scripts exactly as an operator would: certificates from ``gen_certs.sh``, keys from
``gen_node_keys.sh``, the allow-list filled by ``register_nodes.sh``, the run submitted by
``run.sh`` (``flwr run . <connection> --stream``). Each organisation reads one task from the
offline data root and keeps Sigma_k in its own state directory. The SuperLink listens on
loopback; SuperNodes, and the uninvited party of the access tests, reach it only through the
nginx proxy of ``start_proxy.sh``, which passes on the Fleet API routes and nothing else.

Flower 1.41 notices a dead SuperNode by its missing heartbeats: a node is offline 2 x 30 s after
its last heartbeat, and the SuperLink then answers the messages sent to it with a
NODE_UNAVAILABLE error reply, which ends the round without waiting for ``round-timeout``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import psutil
import pytest
import torch
from safetensors import safe_open

from client.personal_store import PERSONAL_FILE, load_personal
from client.privacy import LEDGER_FILE
from server.run_dir import read_metrics
from tests.deployment.federation import (
    BIN,
    FLEET_ROUTES,
    LocalFederation,
    free_port,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1500),
]

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
        fed.start_proxy()
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


# -- nobody joins uninvited -------------------------------------------------------------------
# The uninvited party holds ca.crt, its own key pair and network reach to the public address.


def _outsider(fed: LocalFederation, address: str) -> tuple[Path, Path]:
    """A `flwr` home with a connection 'outsider' to ``address``, and the outsider's key."""
    home = fed.root / f"outsider-{address.rsplit(':', 1)[1]}"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(
        "[superlink]\ndefault = 'outsider'\n[superlink.outsider]\n"
        f"address = '{address}'\nroot-certificates = '{fed.certs / 'ca.crt'}'\ninsecure = false\n"
    )
    key = home / "key"
    if not key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f", str(key)], check=True
        )
    return home, key


def _flwr(fed: LocalFederation, home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "flwr"), *args],
        env=fed.env(FLWR_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=fed.root,
    )


def _node_ids(fed: LocalFederation) -> list[str]:
    """Every node the SuperLink knows (registered, online or offline)."""
    return sorted(n["node-id"] for n in fed.nodes())


def test_superlink_listens_on_loopback_only(fed):
    link = psutil.Process(fed.procs["superlink"].pid)
    family = [link, *link.children(recursive=True)]
    listening = {
        c.laddr
        for p in family
        for c in p.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }
    assert (("127.0.0.1", fed.port)) in listening
    assert all(addr.ip in ("127.0.0.1", "::1") for addr in listening), listening


@pytest.mark.parametrize(
    "path",
    [
        "/v1/control/list-runs",
        "/v1/control/register-node",
        "/v1/control/list-nodes",
        "/v1/control/start-run",
        "/v1/runtime/get-nodes",
        "/v1/runtime/pull-task-input",
        "/v1/fleet/register-node",  # self-registration
        "/v1/fleet/unregister-node",
        "/docs",
        "/openapi.json",
        "/health",
        "/v1/fleet/../control/list-runs",
        "/v1/fleet/activate-node/..%2f..%2fcontrol/list-runs",
        "/v1/fleet/activate-node%3f/../../control/list-runs",
        "/v1/FLEET/activate-node",
    ],
)
def test_public_address_serves_only_the_fleet_api(fed, path):
    url = f"https://127.0.0.1:{fed.public_port}"
    with httpx.Client(base_url=url, verify=str(fed.certs / "ca.crt")) as client:
        request = client.build_request("POST", "/", content=b"")
        request.url = request.url.copy_with(raw_path=path.encode())  # sent as written
        response = client.send(request)
    assert response.status_code == 403, (path, response.status_code, response.text[:200])
    # The same request on the loopback SuperLink shows what the proxy keeps out: without
    # credentials the Control API answers there.
    if path == "/v1/control/list-runs":
        direct = httpx.post(
            f"https://127.0.0.1:{fed.port}{path}",
            verify=str(fed.certs / "ca.crt"),
            headers={"content-type": "application/protobuf"},
        )
        assert direct.status_code == 200


@pytest.mark.parametrize("route", FLEET_ROUTES)
def test_fleet_routes_pass_the_proxy_but_need_a_node_signature(fed, route):
    response = httpx.post(
        f"https://127.0.0.1:{fed.public_port}/v1/fleet/{route}",
        verify=str(fed.certs / "ca.crt"),
        headers={"content-type": "application/protobuf"},
    )
    assert response.status_code == 401  # the SuperLink's NodeAuthMiddleware, not the proxy


def test_uninvited_cli_cannot_register_a_key_or_list_runs(fed):
    home, key = _outsider(fed, f"127.0.0.1:{fed.public_port}")
    before = _node_ids(fed)
    register = _flwr(fed, home, "supernode", "register", f"{key}.pub", "outsider")
    assert register.returncode != 0
    assert "403 Forbidden" in register.stdout + register.stderr
    listed = _flwr(fed, home, "ls", "outsider")
    assert listed.returncode != 0
    assert "403 Forbidden" in listed.stdout + listed.stderr
    nodes = _flwr(fed, home, "supernode", "list", "outsider")
    assert nodes.returncode != 0
    assert _node_ids(fed) == before and len(before) == 3


def _keyless_node(fed: LocalFederation, name: str, address: str):
    """A SuperNode with no auth key: it tries to register itself through the Fleet API."""
    env = fed.env(FLWR_HOME=str(fed.root / name))
    args = [str(BIN / "flower-supernode"), "--superlink", address]
    args += ["--root-certificates", str(fed.certs / "ca.crt")]
    args += ["--host", "127.0.0.1", "--port", str(free_port())]
    return fed.spawn(name, args, env)


def test_supernode_self_registration_is_refused(fed):
    before = _node_ids(fed)
    # Through the public address the proxy refuses the route outright.
    _keyless_node(fed, "self-register-public", f"127.0.0.1:{fed.public_port}")
    wait_for(
        lambda: (
            "403 Forbidden" in fed.log_text("self-register-public")
            and "/v1/fleet/register-node" in fed.log_text("self-register-public")
        ),
        120,
        "the proxy to refuse self-registration",
    )
    fed.kill("self-register-public")
    # Even on the loopback SuperLink, Flower's SuperNode authentication refuses it.
    proc = _keyless_node(fed, "self-register-direct", f"127.0.0.1:{fed.port}")
    assert proc.wait(timeout=120) != 0
    assert "SuperNode authentication is enabled" in fed.log_text("self-register-direct")
    assert _node_ids(fed) == before
    nodes = fed.nodes()
    assert len(nodes) == 3 and all(n["status"] == "online" for n in nodes)


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
        "privacy.dp-mode='local'",
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
