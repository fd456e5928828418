"""How a sandboxed program is launched: its interpreter, user, resource limits and namespaces.

Two modes, probed once per process:

- ``"bubblewrap"``: the program runs under bubblewrap (https://github.com/containers/bubblewrap)
  in fresh user, PID, network, IPC, UTS and mount namespaces (``--unshare-all``), on a
  read-only view of just the system directories Python needs, with a fresh tmpfs as its work
  directory and private ``/tmp`` and ``/dev/shm``, in a new session, dying with its parent.
  When the run ends, the PID namespace's init exits and the kernel kills every process left in
  it, however it forked or whatever session it made; what it wrote vanishes with the tmpfs.
- ``"guard"``: the fallback where bwrap cannot run; only the in-process guard of
  :mod:`codetasks.sandbox.harness`, the rlimits, and (as root) the ``nobody`` user.

Both keep the guard and the rlimits as defence in depth.
"""

from __future__ import annotations

import ctypes
import functools
import os
import pwd
import resource
import shutil
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable

BUBBLEWRAP, GUARD = "bubblewrap", "guard"
MODES: tuple[str, ...] = (BUBBLEWRAP, GUARD)
SANDBOX_HOME = "/sandbox"  # the work directory inside bubblewrap
FSIZE_BYTES = 64 * 1024 * 1024  # bounds each file the child writes, its stderr included
TMPFS_BYTES = 64 * 1024 * 1024  # bounds all files in each tmpfs (they live in host memory)
MAX_TASKS = 64  # per-uid process/thread cap once the child runs as `nobody`
_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"
_SYSTEM_DIRS = ("/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin")
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/passwd", "/etc/group")
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
_PR_SET_PDEATHSIG = 1  # prctl(2)
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the forked child only calls it


def preexec(memory_mb: int, cpu_s: int, ids: tuple[int, int] | None) -> Callable[[], None]:
    """Set the rlimits, drop to ``ids`` and ask for SIGKILL when the parent dies, in the
    child before it executes anything."""
    memory = memory_mb * 1024 * 1024
    parent = os.getpid()
    limits = (
        (resource.RLIMIT_AS, memory, memory),
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),  # SIGXCPU first, SIGKILL a second later
        (resource.RLIMIT_FSIZE, FSIZE_BYTES, FSIZE_BYTES),
        (resource.RLIMIT_NPROC, MAX_TASKS, MAX_TASKS),
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

    return apply


def bwrap_command(
    interpreter: str, *, info_fd: int | None = None, tmpfs_size: int = TMPFS_BYTES
) -> list[str]:
    """The bubblewrap prefix that runs ``interpreter`` in fresh namespaces (see module doc);
    bwrap writes the sandbox init's host PID as JSON to ``info_fd``."""
    cmd = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--clearenv"]
    if info_fd is not None:
        cmd += ["--info-fd", str(info_fd)]
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
def launch_config() -> tuple[str, tuple[int, int] | None]:
    """Pick the interpreter and, when root, the unprivileged (uid, gid) to run as."""
    if os.geteuid() != 0:
        return sys.executable, None
    try:
        ids = pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid
    except KeyError:
        ids = 65534, 65534
    # sys.executable may sit under a root-only directory (e.g. /root/.pyenv) that `nobody`
    # cannot enter, so a system Python may stand in; our own Python version comes first.
    versions = {name: _probe([name], ids) for name in _candidates()}
    working = sorted((n for n, v in versions.items() if v), key=lambda n: versions[n] != _VERSION)
    if working:
        return working[0], ids
    message = "sandbox: no Python runs as 'nobody'; sandboxed code runs as root, guard only"
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    return sys.executable, None


@functools.cache
def best_mode() -> str:
    """``"bubblewrap"`` if a probe program runs under bwrap here, else ``"guard"`` (warned)."""
    interpreter, ids = launch_config()
    if shutil.which("bwrap") and _probe(bwrap_command(interpreter), ids):
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


def _probe(launcher: list[str], ids: tuple[int, int] | None) -> str | None:
    """The interpreter's version if it runs stdlib imports as ``ids`` via ``launcher``."""
    code = "import collections, heapq, math, re, sys; print('%d.%d' % sys.version_info[:2])"
    try:
        done = subprocess.run(
            [*launcher, "-I", "-S", "-c", code], capture_output=True, timeout=30,
            cwd="/", env=ENV, preexec_fn=preexec(512, 30, ids),
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode().strip() if done.returncode == 0 else None
