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

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from codetasks.sandbox import isolation

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
    try:
        with tempfile.TemporaryFile() as info:  # bwrap's --info-fd: the sandbox init's PID
            if workdir is None:
                cmd, cwd = isolation.bwrap_command(interpreter, info_fd=info.fileno()), "/"
                env = dict(isolation.ENV)
            else:
                cmd, cwd = [interpreter], workdir
                env = isolation.ENV | {"HOME": workdir, "TMPDIR": workdir}
            launch = _Launch([*cmd, "-I", "-S", "-c", HARNESS], cwd, env, info,
                             isolation.preexec(memory_mb, cpu_s, ids))  # fmt: skip
            return _run(launch, job, mode, timeout_s)
    finally:
        if workdir is not None and ids is not None:
            isolation.kill_user(ids)  # bubblewrap's PID namespace has done this already
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class _Launch:
    cmd: list[str]
    cwd: str
    env: dict[str, str]
    info: IO[bytes]
    preexec: Callable[[], None]


def _host_workdir(ids: tuple[int, int] | None) -> str:
    workdir = tempfile.mkdtemp(prefix="fedcolora-sbx-")
    if ids is not None:
        os.chown(workdir, *ids)  # the unprivileged child needs its working directory
    return workdir


def _run(launch: _Launch, job: dict[str, Any], mode: str, timeout_s: float) -> RawRun:
    with tempfile.TemporaryFile() as channel, tempfile.TemporaryFile() as err:
        payload = json.dumps(job | {"channel_fd": channel.fileno()}).encode()
        start = time.monotonic()
        proc = _spawn(launch, channel, err, start + timeout_s)
        if proc is None:
            return RawRun(mode, None, False, time.monotonic() - start, [], "")
        try:
            proc.communicate(payload, timeout=max(0.0, start + timeout_s - time.monotonic()))
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            if mode == isolation.BUBBLEWRAP:
                _kill_namespace(proc, launch.info)
        seconds = time.monotonic() - start
        _kill_group(proc)
        records = _records(channel)
        stderr = _tail(err, _STDERR_BYTES).decode("utf-8", errors="replace")
    return RawRun(mode, _returncode(proc.returncode, mode), timed_out, seconds, records, stderr)


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
                pass_fds=(channel.fileno(), launch.info.fileno()),
            )  # fmt: skip
        except BlockingIOError:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)


def _kill_namespace(proc: subprocess.Popen[bytes], info: IO[bytes]) -> None:
    """SIGKILL the sandbox's PID-namespace init, then wait for bwrap: the kernel lets init
    finish dying only once every process in its namespace is gone, and bwrap exits only
    after reaping init, so nothing of the run is left when this returns."""
    info.seek(0)
    try:
        child = int(json.loads(info.read(4096))["child-pid"])
        pidfd = os.pidfd_open(child)
    except (ValueError, KeyError, TypeError, OSError):
        return  # bwrap never started its child, or the child is already gone
    try:
        # The PID is init's, not a reused one, while its parent is still our bwrap.
        if _parent_pid(child) == proc.pid:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            proc.wait()
    finally:
        os.close(pidfd)


def _parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


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
        except ValueError:
            records.append(line.decode("utf-8", errors="replace"))
    return records


def _tail(handle: IO[bytes], size: int) -> bytes:
    end = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, end - size))
    return handle.read()
