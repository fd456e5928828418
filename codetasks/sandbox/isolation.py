"""How a sandboxed program is launched: its interpreter, user, resource limits and namespaces.

Two modes, probed once per process:

- ``"bubblewrap"``: the program runs under bubblewrap (https://github.com/containers/bubblewrap)
  in fresh user, PID, network, IPC, UTS and mount namespaces (``--unshare-all``), on a
  read-only view of just the system directories Python needs, with a fresh tmpfs as its work
  directory and private ``/tmp`` and ``/dev/shm``, in a new session, dying with its parent.
  When the run ends, the PID namespace's init exits and the kernel kills every process left in
  it, however it forked or whatever session it made; what it wrote vanishes with the tmpfs.
- ``"guard"``: the fallback where bwrap cannot run; only the in-process guard of
  :mod:`codetasks.sandbox.harness`, the rlimits, and (as root) a uid of the run's own, whose
  processes are all killed when the run ends (:func:`kill_user`).

Both keep the guard and the rlimits as defence in depth, and both install the seccomp filter of
:mod:`codetasks.sandbox.syscalls`, which keeps the rlimits per run rather than per process.
"""

from __future__ import annotations

import ctypes
import functools
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from codetasks.sandbox import syscalls

BUBBLEWRAP, GUARD = "bubblewrap", "guard"
MODES: tuple[str, ...] = (BUBBLEWRAP, GUARD)
SANDBOX_HOME = "/sandbox"  # the work directory inside bubblewrap
FSIZE_BYTES = 64 * 1024 * 1024  # bounds each file the child writes, its stderr included
TMPFS_BYTES = 64 * 1024 * 1024  # bounds all files in each tmpfs (they live in host memory)
MAX_TASKS = 64  # process/thread cap of the run's uid (the kernel enforces it for non-root)
# Descriptor cap per process. Each open pipe, socket or memfd can hold kernel memory that
# RLIMIT_AS does not count (a socket pair ~250 KB, a memfd up to FSIZE_BYTES): this bounds it.
MAX_FILES = 64
_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"
_SYSTEM_DIRS = ("/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin")
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/passwd", "/etc/group")
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
_RUN_UID_BASE, _RUN_UID_SPAN = 1 << 30, 1 << 24  # no account or image uses these uids
_PR_SET_PDEATHSIG = 1  # prctl(2)
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the forked child only calls it


def preexec(
    memory_mb: int, cpu_s: int, ids: tuple[int, int] | None, *, seccomp: bool = False
) -> Callable[[], None]:
    """Set the rlimits, drop to ``ids``, ask for SIGKILL when the parent dies and, with
    ``seccomp`` (the guard mode; bwrap installs it itself), install the syscall filter, in the
    child before it executes anything."""
    memory = memory_mb * 1024 * 1024
    install_filter = syscalls.installer() if seccomp else None
    parent = os.getpid()
    limits = (
        (resource.RLIMIT_AS, memory, memory),
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),  # SIGXCPU first, SIGKILL a second later
        (resource.RLIMIT_FSIZE, FSIZE_BYTES, FSIZE_BYTES),
        (resource.RLIMIT_NPROC, MAX_TASKS, MAX_TASKS),
        (resource.RLIMIT_NOFILE, MAX_FILES, MAX_FILES),
        (resource.RLIMIT_CORE, 0, 0),
    )

    def apply() -> None:
        for which, soft, hard in limits:
            _, current_hard = resource.getrlimit(which)
            if current_hard != resource.RLIM_INFINITY:
                hard = min(hard, current_hard)  # an unprivileged parent cannot raise it
            resource.setrlimit(which, (min(soft, hard), hard))
        if ids is not None:
            os.setgroups([])
            os.setgid(ids[1])
            os.setuid(ids[0])
        # After setuid, which clears it. bwrap adds the same for its sandbox
        # (--die-with-parent); under the guard this is what ends a run whose evaluator died.
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
        if install_filter is not None:  # last: the process is now what it will run as
            install_filter()

    return apply


def bwrap_command(
    interpreter: str, *, info_fd: int | None = None, seccomp_fd: int | None = None,
    tmpfs_size: int = TMPFS_BYTES,
) -> list[str]:  # fmt: skip
    """The bubblewrap prefix that runs ``interpreter`` in fresh namespaces (see module doc);
    bwrap writes the sandbox init's host PID as JSON to ``info_fd`` and installs the BPF
    program it reads from ``seccomp_fd`` just before it executes ``interpreter``."""
    cmd = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--clearenv"]
    if info_fd is not None:
        cmd += ["--info-fd", str(info_fd)]
    if seccomp_fd is not None:
        cmd += ["--seccomp", str(seccomp_fd)]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin
            cmd += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            cmd += ["--ro-bind", path, path]
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(interpreter)))
    if not prefix.startswith("/usr/") and prefix != "/usr":
        cmd += ["--ro-bind", prefix, prefix]  # e.g. a pyenv or /opt Python
    for path in _SYSTEM_FILES:
        cmd += ["--ro-bind-try", path, path]
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    for path in ("/dev/shm", "/tmp", SANDBOX_HOME):  # private, size-capped, gone with the run
        cmd += ["--size", str(tmpfs_size), "--tmpfs", path]
    cmd += ["--remount-ro", "/", "--chdir", SANDBOX_HOME, "--hostname", "sandbox"]
    env = ENV | {"HOME": SANDBOX_HOME, "TMPDIR": SANDBOX_HOME}  # where the guard allows writes
    for key, value in env.items():
        cmd += ["--setenv", key, value]
    return [*cmd, "--", interpreter]


@functools.cache
def launch_config() -> tuple[str, bool]:
    """Pick the interpreter, and whether runs drop to their own unprivileged uid (as root)."""
    if os.geteuid() != 0:
        return sys.executable, False
    # sys.executable may sit under a root-only directory (e.g. /root/.pyenv) that an
    # unprivileged uid cannot enter, so a system Python may stand in; our version comes first.
    versions = {name: _probe([name], run_ids(True)) for name in _candidates()}
    working = sorted((n for n, v in versions.items() if v), key=lambda n: versions[n] != _VERSION)
    if working:
        return working[0], True
    message = "sandbox: no Python runs unprivileged; sandboxed code runs as root, guard only"
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    return sys.executable, False


def run_ids(unprivileged: bool | None = None) -> tuple[int, int] | None:
    """A fresh (uid, gid) for one run when we are root, else None. No other run shares it,
    so no run can touch another's files or processes, or exhaust its process cap."""
    if not (launch_config()[1] if unprivileged is None else unprivileged):
        return None
    uid = _RUN_UID_BASE + secrets.randbelow(_RUN_UID_SPAN)
    return uid, uid


def kill_user(ids: tuple[int, int], grace_s: float = 5.0) -> None:
    """SIGKILL every process of the run's uid, however it forked or whatever session it made,
    until none is left running: the guard mode's stand-in for a PID namespace."""
    deadline = time.monotonic() + grace_s
    while _running_as(ids[0]) and time.monotonic() < deadline:
        pid = os.fork()
        if pid == 0:  # no exec: execve would count against the uid's exhausted process cap
            try:
                os.setgid(ids[1])
                os.setuid(ids[0])
                os.kill(-1, signal.SIGKILL)  # every process this uid may signal, but itself
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(0.01)


def _running_as(uid: int) -> bool:
    """Whether any live (non-zombie) process has real uid ``uid``."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = dict(
                line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            )
        except (OSError, ValueError):
            continue
        if int(status["Uid"].split()[0]) == uid and not status["State"].strip().startswith("Z"):
            return True
    return False


@functools.cache
def best_mode() -> str:
    """``"bubblewrap"`` if a probe program runs under bwrap here, else ``"guard"`` (warned)."""
    interpreter, _ = launch_config()
    if shutil.which("bwrap"):
        for _attempt in range(3):  # a loaded machine may fail one probe
            seccomp_fd = syscalls.program_fd()  # probed as runs go: with the filter
            fds = () if seccomp_fd is None else (seccomp_fd,)
            try:
                version = _probe(bwrap_command(interpreter, seccomp_fd=seccomp_fd), run_ids(), fds)
            finally:
                for fd in fds:
                    os.close(fd)
            if version:
                return BUBBLEWRAP
    warnings.warn(
        "sandbox: bubblewrap is missing or cannot create namespaces here; generated code runs "
        "under the in-process guard only (install Debian's `bubblewrap`)",
        RuntimeWarning,
        stacklevel=2,
    )
    return GUARD


def _candidates() -> list[str]:
    system = (f"/usr/bin/python{_VERSION}", "/usr/bin/python3")
    names = (sys.executable, os.path.realpath(sys.executable), sys._base_executable, *system)
    return [name for name in dict.fromkeys(names) if os.path.exists(name)]


def _probe(
    launcher: list[str], ids: tuple[int, int] | None, pass_fds: tuple[int, ...] = ()
) -> str | None:
    """The interpreter's version if it runs stdlib imports as ``ids`` via ``launcher``."""
    code = "import collections, heapq, math, re, sys; print('%d.%d' % sys.version_info[:2])"
    try:
        done = subprocess.run(
            [*launcher, "-I", "-S", "-c", code], capture_output=True, timeout=30,
            cwd="/", env=ENV, preexec_fn=preexec(512, 30, ids), pass_fds=pass_fds,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode().strip() if done.returncode == 0 else None
