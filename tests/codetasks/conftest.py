"""Fixtures of the sandbox tests: a subreaper that sees escaped processes, an open host dir."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.codetasks import sandbox_support
from tests.codetasks.sandbox_support import live_children

_PR_SET_CHILD_SUBREAPER = 36  # prctl(2)


@pytest.fixture
def reaper() -> Iterator[None]:
    """Make this process a child subreaper for the test, so that anything a sandboxed program
    double-forks away from its parent is re-parented here, where :func:`live_children` sees
    it (instead of at PID 1, among everyone else's processes). Leftovers are killed after."""
    libc = ctypes.CDLL(None, use_errno=True)
    sandbox_support.PREEXISTING.clear()
    sandbox_support.PREEXISTING.update(live_children())  # e.g. another fixture's server
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        for pid in live_children():
            os.kill(pid, signal.SIGKILL)
        live_children()


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A host directory anyone may write to (under /tmp, reachable by ``nobody``)."""
    path = Path(tempfile.mkdtemp(prefix="fedcolora-attack-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
