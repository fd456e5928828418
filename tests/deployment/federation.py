"""A SuperLink, its Fleet-only proxy and SuperNodes as separate processes on loopback, driven
through ``deploy/``. The SuperLink (all APIs) listens on ``port``; SuperNodes dial the proxy on
``public_port``, as other organisations would.

Every process is started with ``start_new_session=True`` and remembered by PID, with the PIDs
of its descendants (Flower's SuperExec, ServerApp and ClientApp processes); :meth:`stop` ends
all of them, so a failing test leaves nothing running.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# The environment running the tests: the repository's .venv, or a shared one (a git worktree).
VENV = Path(sys.prefix)
BIN = VENV / "bin"
# deploy/start_proxy.sh needs nginx (scripts/setup.sh installs nginx-light when run as root).
HAS_NGINX = bool(shutil.which("nginx")) or Path("/usr/sbin/nginx").exists()
# The Fleet routes a SuperNode with a registered key calls (flwr/supernode/fleet_http_client.py):
# all the proxy publishes.
FLEET_ROUTES = (
    "activate-node",
    "deactivate-node",
    "send-node-heartbeat",
    "pull-messages",
    "push-messages",
    "get-run",
    "get-fab",
    "push-object",
    "pull-object",
    "confirm-message-received",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for(condition: Callable[[], object], timeout: float, what: str, poll: float = 1.0):
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _signal(processes: Iterable[psutil.Process], sig: int) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(sig)


class LocalFederation:
    """Certificates, node keys, a SuperLink and SuperNodes under one temporary directory."""

    def __init__(self, root: Path, data_root: Path) -> None:
        self.root, self.data_root = root, data_root
        self.certs, self.keys, self.logs = root / "certs", root / "keys", root / "logs"
        self.cli_home = root / "cli-home"  # FLWR_HOME of the `flwr` CLI: the connection lives here
        self.link_home = root / "superlink-home"  # FLWR_HOME of the SuperLink (unpacked apps)
        self.port = free_port()  # the SuperLink: Fleet, Control and Runtime APIs, loopback
        self.public_port = free_port()  # the nginx proxy: the Fleet API only
        self.procs: dict[str, subprocess.Popen] = {}
        self.family: dict[str, set[psutil.Process]] = {}  # name -> processes of its tree
        self.must_live: set[str] = set()  # components whose early exit is a failure
        self.logs.mkdir(parents=True, exist_ok=True)

    # -- environment and scripts ------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            VENV=str(VENV),
            CERTS_DIR=str(self.certs),
            SUPERLINK_HOST="127.0.0.1",
            SUPERLINK_PORT=str(self.port),
            PUBLIC_PORT=str(self.public_port),
            FLWR_HOME=str(self.cli_home),
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def script(self, name: str, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [str(DEPLOY / name), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{name} {args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def spawn(
        self, name: str, args: list[str], env: dict[str, str], *, must_live: bool = False
    ) -> subprocess.Popen:
        log = open(self.log_path(name), "a")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            args,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.root,
        )
        log.close()  # the child holds its own descriptor
        self.procs[name], self.family[name] = proc, {psutil.Process(proc.pid)}
        if must_live:
            self.must_live.add(name)
        return proc

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def log_text(self, name: str, offset: int = 0) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace")[offset:] if path.exists() else ""

    # -- components -------------------------------------------------------------------------

    def start_superlink(self) -> None:
        self.spawn(
            "superlink",
            [str(DEPLOY / "start_superlink.sh")],
            self.env(FLWR_HOME=str(self.link_home)),
            must_live=True,
        )
        wait_for(self._superlink_listening, 90, "the SuperLink to listen")

    def _superlink_listening(self) -> bool:
        self._require_alive("superlink")
        return _listening(self.port)

    def start_proxy(self) -> None:
        """``deploy/start_proxy.sh``: nginx publishing only the Fleet routes."""
        self.spawn(
            "proxy",
            [str(DEPLOY / "start_proxy.sh")],
            self.env(PROXY_DIR=str(self.root / "proxy")),
            must_live=True,
        )

        def listening() -> bool:
            self._require_alive("proxy")
            return _listening(self.public_port)

        wait_for(listening, 30, "the proxy to listen", poll=0.2)

    def state_dir(self, client_id: int) -> Path:
        return self.root / f"org-{client_id}" / "state"

    def start_node(
        self, client_id: int, tasks: str, *, key_id: int | None = None, must_live: bool = True
    ) -> subprocess.Popen:
        """Start SuperNode ``node-<client_id>`` with key ``node-<key_id>`` (default: its own)."""
        env = self.env(
            NODE_KEY=str(self.keys / f"node-{key_id or client_id}"), NODE_PORT=str(free_port())
        )
        args = [
            str(DEPLOY / "start_supernode.sh"),
            str(client_id),
            str(self.data_root),
            tasks,
            str(self.state_dir(client_id)),
        ]
        return self.spawn(f"node-{client_id}", args, env, must_live=must_live)

    def nodes(self) -> list[dict]:
        """The SuperLink's node list (``flwr supernode list --format json``)."""
        out = subprocess.run(
            [str(BIN / "flwr"), "supernode", "list", "fedcolora-tls", "--format", "json"],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        return json.loads(out[out.index("{") :])["nodes"]

    def wait_online(self, count: int, timeout: float = 120) -> None:
        def online() -> bool:
            for name in self.must_live:
                self._require_alive(name)
            return sum(n["status"] == "online" for n in self.nodes()) == count

        wait_for(online, timeout, f"{count} SuperNodes online", poll=2)

    def run(self, overrides: Iterable[str], name: str) -> subprocess.Popen:
        """Start ``deploy/run.sh`` (``flwr run . fedcolora-tls --stream``) in the background."""
        return self.spawn(f"run-{name}", [str(DEPLOY / "run.sh"), *overrides], self.env())

    def _require_alive(self, name: str) -> None:
        if (code := self.procs[name].poll()) is not None:
            raise RuntimeError(f"{name} exited with {code}:\n{self.log_text(name)[-3000:]}")

    # -- stopping ---------------------------------------------------------------------------

    def _remember_family(self) -> None:
        """Record descendants now: once a parent dies its children are re-parented to init."""
        for name, proc in self.procs.items():
            try:
                children = psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            self.family[name].update(children)

    def _living(self, name: str) -> list[psutil.Process]:
        # psutil.Process checks the start time too, so a reused PID is never signalled.
        alive = []
        for process in self.family.get(name, ()):
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
            except psutil.NoSuchProcess:
                pass
        return alive

    def kill(self, name: str) -> None:
        """``kill -9`` a component and everything it started, as if its machine died."""
        self._remember_family()
        self.must_live.discard(name)
        _signal(self._living(name), signal.SIGKILL)
        self.procs[name].wait(timeout=30)

    def stop(self) -> None:
        """Terminate every process started here, by PID: SIGTERM, then SIGKILL after 15 s."""
        self._remember_family()
        living = [p for name in self.procs for p in self._living(name)]
        _signal(living, signal.SIGTERM)
        _, stubborn = psutil.wait_procs(living, timeout=15)
        _signal(stubborn, signal.SIGKILL)
        psutil.wait_procs(stubborn, timeout=10)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.wait(timeout=10)
