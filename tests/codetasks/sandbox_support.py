"""Shared by the sandbox tests: the modes to run in, and an observer of what a run left behind
(the fixtures ``reaper`` and ``open_dir`` are in ``conftest.py``).

The bubblewrap mode runs wherever bwrap works. Where it does not, its tests are skipped,
unless ``CI`` is set: there a missing bubblewrap fails them, so CI cannot silently fall back
to the guard.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from codetasks.sandbox import sandbox_mode

BWRAP_WORKS = sandbox_mode() == "bubblewrap"
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
BWRAP_ONLY = pytest.mark.skipif(
    not BWRAP_WORKS and not IN_CI, reason="bubblewrap cannot run here (and CI is not set)"
)
MODES = [pytest.param("bubblewrap", marks=BWRAP_ONLY), "guard"]


PREEXISTING: set[int] = set()  # children that were running before the test (set by `reaper`)


def live_children() -> set[int]:
    """PIDs of this process's children that are still running (zombies are reaped), other
    than those that were running before the test began."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
    me, live = str(os.getpid()), set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            live.add(int(pid))
    return live - PREEXISTING


CTYPES = (
    "import sys\nsys.modules.pop('ctypes', None)\nsys.modules.pop('_ctypes', None)\n"
    "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
)
