"""Make sure `flwr run . local` will not `uv sync` the app's dependencies (used by `make run`).

`flwr run . local` reuses a managed local SuperLink if one answers on the local port, and starts
one otherwise, handing it the caller's environment. A SuperLink that runs without
``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` makes every run install the app's
dependencies into ``$FLWR_HOME/runtime-envs`` with ``uv sync``: on a CPU-only machine that means
the CUDA build of torch and ~15 ``nvidia-*`` wheels (5.5 GB), although ``.venv`` already holds
the CPU wheel. Such a SuperLink is stale: this script stops it, so that `flwr run` starts a
fresh one with the variable set (the Makefile exports it).

    python scripts/local_superlink.py check     # list managed local SuperLinks; exit 1 if stale
    python scripts/local_superlink.py replace   # stop the stale ones (the next run restarts one)
"""

from __future__ import annotations

import contextlib
import os
import sys

import psutil

VARIABLE = "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"
# Flower's own defaults (flwr.cli.constant), overridable by the same variables.
PORT = os.environ.get("FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", "39091")


def _option(cmdline: list[str], flag: str) -> str | None:
    return cmdline[cmdline.index(flag) + 1] if flag in cmdline[:-1] else None


def managed_superlinks(port: str = PORT) -> list[psutil.Process]:
    """SuperLinks that `flwr run . local` would reuse: simulation mode on the local port."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        launcher = " ".join(cmdline[:2])
        if (
            "flower-superlink" in launcher
            and "--simulation" in cmdline
            and _option(cmdline, "--port") == port
        ):
            found.append(process)
    return found


def installs_dependencies(process: psutil.Process) -> bool:
    """True unless ``process`` was started with the variable set to 1 (Flower's own test)."""
    try:
        return process.environ().get(VARIABLE) != "1"
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return True  # cannot prove it is safe: treat it as stale


def stop(process: psutil.Process, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL what is still alive after ``timeout`` seconds (children too)."""
    try:
        family = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.terminate()
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(alive, timeout=timeout)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("check", "replace"):
        print("usage: local_superlink.py check|replace", file=sys.stderr)
        return 2
    stale = [p for p in managed_superlinks() if installs_dependencies(p)]
    for process in stale:
        if argv[0] == "check":
            print(f"stale local SuperLink (pid {process.pid}) would `uv sync` the app: {VARIABLE}")
        else:
            print(
                f"[make run] stopping the local SuperLink (pid {process.pid}) started without "
                f"{VARIABLE}=1; `flwr run` starts a fresh one that uses .venv as it is"
            )
            stop(process)
    return 1 if stale and argv[0] == "check" else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
