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
from typing import IO
from dataclasses import dataclass

from codetasks.examples import Example

STATUSES: tuple[str, ...] = ("passed", "failed", "timeout", "error")
_FSIZE_BYTES = 64 * 1024 * 1024  # bounds files the child writes, its stdout/stderr included
_MAX_TASKS = 64  # per-uid process/thread cap once the child runs as `nobody`
_DETAIL_LINES = 20
_DETAIL_CHARS = 2000
_PROBE_IMPORTS = "import collections, heapq, itertools, math, re, string, sys"

# Runs in the child (via `python -c`) before the program. It reads the nonce from stdin,
# compiles the program, disables dangerous functions, runs the program, then reports.
_GUARD = r"""
import builtins, faulthandler, io, os, posix, shutil, signal, subprocess, sys
import _io, _posixsubprocess

_PROCESS = ("system", "popen", "kill", "killpg", "fork", "forkpty", "register_at_fork",
    "posix_spawn", "posix_spawnp", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv",
    "spawnve", "spawnvp", "spawnvpe", "execl", "execle", "execlp", "execlpe", "execv",
    "execve", "execvp", "execvpe", "setsid", "setpgid", "setpgrp", "setuid", "setgid",
    "setreuid", "setresuid", "putenv", "unsetenv", "chroot", "chdir", "fchdir")
_FILES = ("remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace",
    "truncate", "ftruncate", "chmod", "fchmod", "lchmod", "chown", "fchown", "lchown",
    "lchflags", "link", "symlink")
_BLOCKED = {os: _PROCESS + _FILES, posix: _PROCESS + _FILES,
    shutil: ("rmtree", "move", "chown"),
    subprocess: ("Popen", "run", "call", "check_call", "check_output", "getoutput",
        "getstatusoutput"),
    signal: ("pthread_kill", "pidfd_send_signal"), _posixsubprocess: ("fork_exec",)}
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

def _guard_open(real, root):
    def guarded_open(file, mode="r", *args, **kwargs):
        writes = any(flag in mode for flag in "wax+")
        if writes and not isinstance(file, int) and not _inside(file, root):
            raise PermissionError(f"sandbox: writing {file!r} is disabled")
        return real(file, mode, *args, **kwargs)
    return guarded_open

def _guard_os_open(real, root):
    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & _WRITE_FLAGS and not _inside(path, root):
            raise PermissionError(f"sandbox: writing {path!r} is disabled")
        return real(path, flags, *args, **kwargs)
    return guarded_os_open

def _lock_down(root):
    faulthandler.disable()
    for module, names in _BLOCKED.items():
        for name in names:
            if hasattr(module, name):
                setattr(module, name, _refuse(f"{module.__name__}.{name}"))
    builtins.open = io.open = _io.open = _guard_open(_io.open, root)
    os.open = posix.open = _guard_os_open(posix.open, root)
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
    try:
        sys.stdout.flush()
    except (AttributeError, OSError, ValueError):
        pass
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
        path = _stage(workdir, program, ids)
        nonce = secrets.token_hex(16)
        preexec = _preexec(memory_mb, cpu_limit, ids)
        return _execute([interpreter, "-I", "-S", "-c", _GUARD, path], workdir, nonce, preexec,
                        timeout_s)
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
        # The unprivileged child needs its working directory to itself.
        os.chown(workdir, *ids)
    return path


def _execute(
    cmd: list[str], workdir: str, nonce: str, preexec: Callable[[], None], timeout_s: float
) -> SandboxResult:
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=workdir, env=env,
            preexec_fn=preexec, start_new_session=True, close_fds=True,
        )  # fmt: skip
        _send_nonce(proc, nonce)
        timed_out = _wait(proc, timeout_s)
        seconds = time.monotonic() - start
        reported = nonce.encode() in _tail(out, 65536)
        detail = _detail(_tail(err, 16384))
    status = _classify(proc.returncode, timed_out, reported, detail)
    if proc.returncode == 0 and not reported:
        detail = (detail + "\nsandbox: the program exited before its tests finished").strip()
    return SandboxResult(status, status == "passed", seconds, detail)


def _send_nonce(proc: subprocess.Popen[bytes], nonce: str) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(nonce.encode() + b"\n")
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the child died before reading; its exit status tells why


def _wait(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    try:
        proc.wait(timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
    _kill_group(proc)
    return timed_out


def _kill_group(proc: subprocess.Popen[bytes], grace_s: float = 2.0) -> None:
    """SIGKILL the child's whole process group, even after a clean exit, and reap it.

    Forked leftovers stay zombies (and count against the user's process cap) until the
    leader is reaped and init collects them, so we reap the leader, then re-send the signal
    (covering members that were mid-fork) until the group is gone or the grace runs out.
    """
    deadline = time.monotonic() + grace_s
    while True:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            break
        proc.wait()
        if time.monotonic() > deadline:
            break
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


def _detail(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", errors="replace").splitlines()[-_DETAIL_LINES:]
    return "\n".join(lines)[-_DETAIL_CHARS:]


def _preexec(memory_mb: int, cpu_s: int, ids: tuple[int, int] | None) -> Callable[[], None]:
    limits = (
        (resource.RLIMIT_AS, memory_mb * 1024 * 1024, memory_mb * 1024 * 1024),
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
    ids = _nobody_ids()
    working = [(c, v) for c in _candidates() if (v := _probe(c, ids)) is not None]
    # Prefer our own Python version; sys.executable may sit under a root-only directory
    # (e.g. /root/.pyenv), which `nobody` cannot execute, so a system Python can stand in.
    for candidate, version in working:
        if version == f"{sys.version_info[0]}.{sys.version_info[1]}":
            return candidate, ids
    if working:
        return working[0][0], ids
    warnings.warn(
        "sandbox: no Python interpreter is runnable as 'nobody'; sandboxed code runs as root "
        "with only the in-process guard",
        RuntimeWarning,
        stacklevel=2,
    )
    return sys.executable, None


def _nobody_ids() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


def _candidates() -> list[str]:
    minor = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    names = [
        sys.executable,
        os.path.realpath(sys.executable),
        getattr(sys, "_base_executable", sys.executable),
        shutil.which(minor, path="/usr/local/bin:/usr/bin:/bin") or "",
        shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or "",
    ]
    return [name for name in dict.fromkeys(names) if name]


def _probe(interpreter: str, ids: tuple[int, int]) -> str | None:
    """Return the interpreter's version if it runs stdlib imports as the unprivileged user."""
    code = f"{_PROBE_IMPORTS}; print('%d.%d' % sys.version_info[:2])"
    try:
        done = subprocess.run(
            [interpreter, "-I", "-S", "-c", code], capture_output=True, timeout=30,
            cwd="/", env={"PATH": "/usr/bin:/bin"}, preexec_fn=_preexec(512, 30, ids),
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode().strip() if done.returncode == 0 else None
