"""Execution sandbox that scores generated Python against its unit tests.

Follows the execution harness of HumanEval (Chen et al., 2021, arXiv 2107.03374): every
program runs in its own interpreter process, in a fresh temporary directory, under resource
limits, after a ``reliability_guard``-style prelude has disabled the functions that destroy
files or spawn and signal processes. Like HumanEval's guard, the prelude is no security
boundary on its own, so when we run as root the child also drops to the ``nobody`` user:
the kernel then refuses writes to host files, signals to our processes, and runaway forks
(RLIMIT_NPROC is enforced for unprivileged users only). A timed-out child is killed together
with its whole process group.

A run passes only when the program exits 0 *and* the prelude got to write a secret nonce
after the program finished, so an early ``exit(0)`` in generated code cannot skip the tests.
"""

from __future__ import annotations

import functools
import math
import os
import pwd
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from codetasks.examples import Example

STATUSES: tuple[str, ...] = ("passed", "failed", "timeout", "error")
_FSIZE_BYTES = 64 * 1024 * 1024  # bounds files the child writes, its stdout/stderr included
_MAX_TASKS = 64  # per-uid process/thread cap once the child runs as `nobody`
_DETAIL_LINES, _DETAIL_CHARS = 20, 2000
_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"
_SPAWN_FAILED = "sandbox: could not start the program (process cap reached)"

# Runs in the child (via `python -c`) before the program. It reads the nonce from stdin,
# compiles the program, disables dangerous functions, runs the program, then reports.
_GUARD = r"""
import builtins, contextlib, faulthandler, io, os, posix, shutil, signal, subprocess, sys
import _io, _posixsubprocess

_PROCESS = '''system popen kill killpg fork forkpty posix_spawn posix_spawnp
    spawnl spawnle spawnlp spawnlpe spawnv spawnve spawnvp spawnvpe execl execle execlp execlpe
    execv execve execvp execvpe setsid setpgid setpgrp setuid setgid setreuid setresuid putenv
    unsetenv chroot chdir fchdir'''.split()
_FILES = '''remove unlink rmdir removedirs rename renames replace truncate ftruncate chmod fchmod
    lchmod chown fchown lchown lchflags link symlink'''.split()
_BLOCKED = {os: _PROCESS + _FILES, posix: _PROCESS + _FILES, shutil: ["rmtree", "move", "chown"],
    subprocess: "Popen run call check_call check_output getoutput getstatusoutput".split(),
    signal: ["pthread_kill", "pidfd_send_signal"], _posixsubprocess: ["fork_exec"]}
_NO_IMPORT = ("ctypes", "_ctypes", "resource", "psutil", "ipdb", "joblib", "tkinter")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

def _refuse(name):
    def refused(*args, **kwargs):
        raise PermissionError(f"sandbox: {name} is disabled")
    return refused

def _inside(path, root):
    try:
        target = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return False
    return target == root or target.startswith(root + os.sep)

def _guard(real, root, writes):
    def guarded(file, *args, **kwargs):
        spec = args[0] if args else kwargs.get("mode", kwargs.get("flags", "r"))
        if not isinstance(file, int) and writes(spec) and not _inside(file, root):
            raise PermissionError(f"sandbox: writing {file!r} is disabled")
        return real(file, *args, **kwargs)
    return guarded

def _lock_down(root):
    faulthandler.disable()
    for module, names in _BLOCKED.items():
        for name in names:
            if hasattr(module, name):
                setattr(module, name, _refuse(f"{module.__name__}.{name}"))
    builtins.open = io.open = _io.open = _guard(_io.open, root, lambda m: set(m) & set("wax+"))
    os.open = posix.open = _guard(posix.open, root, lambda flags: flags & _WRITE_FLAGS)
    builtins.help = None
    for name in _NO_IMPORT:
        sys.modules[name] = None

def _main():
    nonce = sys.stdin.readline().strip().encode()
    sys.stdin = open(os.devnull)
    path = sys.argv[1]
    with open(path, encoding="utf-8") as handle:
        code = compile(handle.read(), path, "exec")
    report_fd = os.dup(1)
    _lock_down(os.path.dirname(os.path.realpath(path)))
    exec(code, {"__name__": "__main__", "__builtins__": builtins})
    with contextlib.suppress(Exception):
        sys.stdout.flush()  # the program may have closed or replaced it
    os.write(report_fd, b"\n" + nonce + b"\n")

_main()
"""


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed run; ``detail`` is the tail of the child's stderr."""

    status: str
    passed: bool
    seconds: float
    detail: str


def privilege_drop_active() -> bool:
    """True when sandboxed programs run as an unprivileged user (we are root)."""
    return _launch_config()[1] is not None


def run_program(
    program: str, *, timeout_s: float = 10.0, memory_mb: int = 1024, cpu_s: int | None = None
) -> SandboxResult:
    """Run ``program`` in a sandboxed Python subprocess and report how it ended."""
    interpreter, ids = _launch_config()
    cpu_limit = cpu_s if cpu_s is not None else math.ceil(timeout_s) + 1
    workdir = tempfile.mkdtemp(prefix="fedcolora-sbx-")
    try:
        cmd = [interpreter, "-I", "-S", "-c", _GUARD, _stage(workdir, program, ids)]
        return _execute(cmd, workdir, _preexec(memory_mb, cpu_limit, ids), timeout_s)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def build_program(example: Example, code: str) -> str:
    """Join setup, candidate code and tests the way MBPP and HumanEval execute them."""
    if not example.tests:
        raise ValueError(f"Example {example.uid!r} has no tests to execute")
    parts = [example.test_setup, code, *example.tests]
    if example.entry_point:
        # HumanEval: `tests` holds `def check(candidate): ...`, called on the entry point.
        parts.append(f"check({example.entry_point})")
    return "\n\n".join(part for part in parts if part) + "\n"


def check_generation(example: Example, code: str, *, timeout_s: float = 10.0) -> SandboxResult:
    """Execute ``code`` (a complete program) against the example's unit tests."""
    return run_program(build_program(example, code), timeout_s=timeout_s)


def _stage(workdir: str, program: str, ids: tuple[int, int] | None) -> str:
    path = os.path.join(workdir, "program.py")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(program)
    os.chmod(path, 0o644)
    if ids is not None:
        os.chown(workdir, *ids)  # the unprivileged child needs its working directory
    return path


def _execute(
    cmd: list[str], workdir: str, preexec: Callable[[], None], timeout_s: float
) -> SandboxResult:
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
    nonce = secrets.token_hex(16).encode()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = _spawn(cmd, out, err, workdir, env, preexec, start + timeout_s)
        if proc is None:
            return SandboxResult("error", False, time.monotonic() - start, _SPAWN_FAILED)
        try:
            proc.communicate(nonce + b"\n", timeout=max(0.0, start + timeout_s - time.monotonic()))
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        seconds = time.monotonic() - start
        _kill_group(proc)
        reported = nonce in _tail(out, 65536)
        detail = _tail(err, 16384).decode("utf-8", errors="replace")
    detail = "\n".join(detail.splitlines()[-_DETAIL_LINES:])[-_DETAIL_CHARS:]
    status = _classify(proc.returncode, timed_out, reported, detail)
    if proc.returncode == 0 and not reported:
        detail = (detail + "\nsandbox: the program exited before its tests finished").strip()
    return SandboxResult(status, status == "passed", seconds, detail)


def _spawn(
    cmd: list[str], out: IO[bytes], err: IO[bytes], workdir: str, env: dict[str, str],
    preexec: Callable[[], None], deadline: float,
) -> subprocess.Popen[bytes] | None:  # fmt: skip
    # The process cap is per user: a concurrent run's fork bomb (or its not-yet-collected
    # zombies) can make our exec fail with EAGAIN for a moment, so retry until the deadline.
    while True:
        try:
            return subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=workdir, env=env,
                preexec_fn=preexec, start_new_session=True, close_fds=True,
            )  # fmt: skip
        except BlockingIOError:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)


def _kill_group(proc: subprocess.Popen[bytes], grace_s: float = 3.0) -> None:
    """SIGKILL the child's process group (even after a clean exit) until it is gone."""
    # Forked leftovers stay zombies, counting against the user's process cap, until the
    # leader is reaped and init collects them; re-sending also catches mid-fork members.
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            break
        proc.wait()
        time.sleep(0.01)
    proc.wait()


def _classify(returncode: int, timed_out: bool, reported: bool, detail: str) -> str:
    if timed_out or returncode == -signal.SIGXCPU:
        return "timeout"
    if returncode == 0:
        return "passed" if reported else "error"
    last = detail.strip().splitlines()[-1] if detail.strip() else ""
    return "failed" if last.startswith("AssertionError") else "error"


def _tail(handle: IO[bytes], size: int) -> bytes:
    end = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, end - size))
    return handle.read()


def _preexec(memory_mb: int, cpu_s: int, ids: tuple[int, int] | None) -> Callable[[], None]:
    memory = memory_mb * 1024 * 1024
    limits = (
        (resource.RLIMIT_AS, memory, memory),
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),  # SIGXCPU first, SIGKILL a second later
        (resource.RLIMIT_FSIZE, _FSIZE_BYTES, _FSIZE_BYTES),
        (resource.RLIMIT_NPROC, _MAX_TASKS, _MAX_TASKS),
        (resource.RLIMIT_CORE, 0, 0),
    )

    def preexec() -> None:
        for which, soft, hard in limits:
            _, current_hard = resource.getrlimit(which)
            if current_hard != resource.RLIM_INFINITY:
                hard = min(hard, current_hard)  # an unprivileged parent cannot raise it
            resource.setrlimit(which, (min(soft, hard), hard))
        if ids is not None:
            os.setgroups([])
            os.setgid(ids[1])
            os.setuid(ids[0])

    return preexec


@functools.cache
def _launch_config() -> tuple[str, tuple[int, int] | None]:
    """Pick the interpreter and, when root, the unprivileged (uid, gid) to run as."""
    if os.geteuid() != 0:
        return sys.executable, None
    try:
        ids = pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid
    except KeyError:
        ids = 65534, 65534
    # sys.executable may sit under a root-only directory (e.g. /root/.pyenv) that `nobody`
    # cannot enter, so a system Python may stand in; our own Python version comes first.
    versions = {name: _probe(name, ids) for name in _candidates()}
    working = sorted((n for n, v in versions.items() if v), key=lambda n: versions[n] != _VERSION)
    if working:
        return working[0], ids
    message = "sandbox: no Python runs as 'nobody'; sandboxed code runs as root, guard only"
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    return sys.executable, None


def _candidates() -> list[str]:
    system = (f"/usr/bin/python{_VERSION}", "/usr/bin/python3")
    names = (sys.executable, os.path.realpath(sys.executable), sys._base_executable, *system)
    return [name for name in dict.fromkeys(names) if os.path.exists(name)]


def _probe(interpreter: str, ids: tuple[int, int]) -> str | None:
    """Return the interpreter's version if it runs stdlib imports as the unprivileged user."""
    code = "import collections, heapq, math, re, sys; print('%d.%d' % sys.version_info[:2])"
    try:
        done = subprocess.run(
            [interpreter, "-I", "-S", "-c", code], capture_output=True, timeout=30,
            cwd="/", env={"PATH": "/usr/bin:/bin"}, preexec_fn=_preexec(512, 30, ids),
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode().strip() if done.returncode == 0 else None
