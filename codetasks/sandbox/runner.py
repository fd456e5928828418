"""Start one sandboxed run of the harness, wait for it within its limits, and collect what it
reported.

Every program runs in its own interpreter process under resource limits, as in HumanEval's
harness (Chen et al., 2021, arXiv 2107.03374), inside bubblewrap where it works (see
:mod:`codetasks.sandbox.isolation`). As root the child first drops to a fresh uid of its own:
the kernel then refuses writes to host files and signals to our processes or to other runs,
and caps runaway forks per run (RLIMIT_NPROC binds unprivileged users only). After every run,
timed out or not, everything it started is killed: under bubblewrap by ending its PID
namespace, under the guard by killing every process of its uid.

The harness reports on a file whose honesty the verdict does not rely on: see
:mod:`codetasks.sandbox.judge`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from codetasks.sandbox import isolation, syscalls

HARNESS = (Path(__file__).parent / "harness.py").read_text(encoding="utf-8")
_RECORD_BYTES = 16 * 1024 * 1024  # the most of the channel that is read back
_STDERR_BYTES = 16384


@dataclass(frozen=True)
class RawRun:
    """What one run left: exit status, the channel's JSON records and the stderr tail."""

    mode: str
    returncode: int | None  # None: the process could not be started
    timed_out: bool
    seconds: float
    records: list[Any]
    stderr: str


def execute(
    job: dict[str, Any], *, mode: str, timeout_s: float, memory_mb: int, cpu_s: int
) -> RawRun:
    """Run the harness on ``job`` (program, calls, asserts, entry point) in ``mode``."""
    interpreter, _ = isolation.launch_config()
    ids = isolation.run_ids()
    workdir = None if mode == isolation.BUBBLEWRAP else _host_workdir(ids)
    info_read, info_write = os.pipe()  # bwrap's --info-fd: the PID of the namespace's init
    seccomp_fd = syscalls.program_fd() if workdir is None else None  # bwrap's --seccomp
    try:
        if workdir is None:
            cmd = isolation.bwrap_command(interpreter, info_fd=info_write, seccomp_fd=seccomp_fd)
            cwd, env = "/", dict(isolation.ENV)
        else:
            cmd, cwd = [interpreter], workdir
            env = isolation.ENV | {"HOME": workdir, "TMPDIR": workdir}
        fds = tuple(fd for fd in (info_write, seccomp_fd) if fd is not None)
        # The guard's child installs the seccomp filter itself; bwrap installs it for its own.
        limits = isolation.preexec(memory_mb, cpu_s, ids, seccomp=workdir is not None)
        launch = _Launch([*cmd, "-I", "-S", "-c", HARNESS], cwd, env, info_write, fds, limits)
        return _run(launch, info_read, job, mode, timeout_s)
    finally:
        os.close(info_read)  # (_run closes info_write once the child holds it)
        if seccomp_fd is not None:
            os.close(seccomp_fd)
        if workdir is not None and ids is not None:
            isolation.kill_user(ids)  # bubblewrap's PID namespace has done this already
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class _Launch:
    cmd: list[str]
    cwd: str
    env: dict[str, str]
    info_fd: int
    pass_fds: tuple[int, ...]  # info_fd and, under bwrap, the seccomp program's
    preexec: Callable[[], None]


def _host_workdir(ids: tuple[int, int] | None) -> str:
    workdir = tempfile.mkdtemp(prefix="fedcolora-sbx-")
    if ids is not None:
        os.chown(workdir, *ids)  # the unprivileged child needs its working directory
    return workdir


def _run(launch: _Launch, info: int, job: dict[str, Any], mode: str, timeout_s: float) -> RawRun:
    with tempfile.TemporaryFile() as channel, tempfile.TemporaryFile() as err:
        payload = json.dumps(job | {"channel_fd": channel.fileno()}).encode()
        start = time.monotonic()
        try:
            proc = _spawn(launch, channel, err, start + timeout_s)
        finally:
            os.close(launch.info_fd)  # ours; the pipe then ends when bwrap's copy does
        if proc is None:
            return RawRun(mode, None, False, time.monotonic() - start, [], "")
        init = _namespace_init(info, start + timeout_s) if mode == isolation.BUBBLEWRAP else None
        try:
            proc.communicate(payload, timeout=max(0.0, start + timeout_s - time.monotonic()))
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        seconds = time.monotonic() - start
        if init is not None:
            _end_namespace(init, kill=timed_out)
        _kill_group(proc)
        records = _records(channel)
        stderr = _tail(err, _STDERR_BYTES).decode("utf-8", errors="replace")
    return RawRun(mode, _returncode(proc.returncode, mode), timed_out, seconds, records, stderr)


def _namespace_init(info: int, deadline: float) -> int | None:
    """A pidfd of the sandbox's init, from the JSON bwrap writes to ``--info-fd`` as soon as
    it has started it; None if bwrap failed first."""
    data = b""
    while (remaining := deadline - time.monotonic()) > 0:
        if not select.select([info], [], [], remaining)[0]:
            break
        chunk = os.read(info, 4096)
        data += chunk
        try:
            child = int(json.loads(data)["child-pid"])
        except (ValueError, KeyError, TypeError):  # not all written yet, or not bwrap's JSON
            if not chunk:
                break
            continue
        try:
            return os.pidfd_open(child)
        except ProcessLookupError:  # already exited and reaped: its namespace is gone
            return None
    return None


def _end_namespace(init: int, kill: bool, grace_s: float = 10.0) -> None:
    """Wait until the sandbox's init has exited, killing it first if ``kill``. The kernel
    lets a namespace's init finish exiting only once every other process in the namespace
    is gone; bwrap itself may exit earlier, as soon as init reports the program's status."""
    try:
        if kill:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(init, signal.SIGKILL)
        select.select([init], [], [], grace_s)  # readable once the process has exited
    finally:
        os.close(init)


def _returncode(code: int, mode: str) -> int:
    """bwrap exits with 128 + N when its child died of signal N; report that as ``-N``."""
    return -(code - 128) if mode == isolation.BUBBLEWRAP and code > 128 else code


def _spawn(launch: _Launch, channel: IO[bytes], err: IO[bytes], deadline: float):
    # The process cap is per user: a concurrent run's fork bomb (or its not-yet-collected
    # zombies) can make our exec fail with EAGAIN for a moment, so retry until the deadline.
    while True:
        try:
            return subprocess.Popen(
                launch.cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                cwd=launch.cwd, env=launch.env, preexec_fn=launch.preexec,
                start_new_session=True, close_fds=True,
                pass_fds=(channel.fileno(), *launch.pass_fds),
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


def _records(channel: IO[bytes]) -> list[Any]:
    """The channel's JSON lines; a line that does not parse stays a string (then ignored)."""
    channel.seek(0)
    records = []
    for line in channel.read(_RECORD_BYTES).splitlines():
        try:
            records.append(json.loads(line))
        except (ValueError, RecursionError):  # the program may write `[[[[...` itself
            records.append(line.decode("utf-8", errors="replace"))
    return records


def _tail(handle: IO[bytes], size: int) -> bytes:
    end = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, end - size))
    return handle.read()
