"""Watch a running simulation from outside: memory of its process tree, and its rounds.

A run executes in its own subprocess, and Ray starts its GCS, raylet and worker processes as
descendants of that subprocess, so the tree rooted at its pid holds the whole simulation.
:class:`MemorySampler` samples the tree once a second; :class:`RoundTail` polls the run's
``metrics.jsonl`` and reports each new round line (for progress bars, TensorBoard and the
per-round memory peaks in ``run_summary.json``).

RSS is summed over processes, so pages shared between them (the torch libraries each Ray
worker maps) are counted once per process; PSS divides shared pages among their users and is
the better estimate of the machine's memory. Both are recorded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from server.round_record import read_records


@dataclass
class Peak:
    rss: int = 0
    pss: int = 0

    def update(self, rss: int, pss: int) -> None:
        self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)

    def as_dict(self) -> dict[str, int]:
        return {"peak_rss_bytes": self.rss, "peak_pss_bytes": self.pss}


def tree_memory(pid: int) -> tuple[int, int, int]:
    """``(rss, pss, processes)`` summed over ``pid`` and all its descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0, 0
    rss = pss = 0
    for proc in procs:
        try:
            info = proc.memory_full_info()  # reads smaps_rollup: cheap on Linux >= 4.14
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss, pss, len(procs)


class MemorySampler(threading.Thread):
    """Peak RSS/PSS of a process tree, overall and per window (a window = one round)."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.total, self.window = Peak(), Peak()
        self.max_processes = 0
        self._lock = threading.Lock()
        self._stop_event = threading.Event()

    def sample(self) -> None:
        rss, pss, count = tree_memory(self.pid)
        with self._lock:
            self.total.update(rss, pss)
            self.window.update(rss, pss)
            self.max_processes = max(self.max_processes, count)

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def take_window(self) -> Peak:
        """The peak since the previous call; starts a new window."""
        self.sample()
        with self._lock:
            window, self.window = self.window, Peak()
        return window

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


class RoundTail(threading.Thread):
    """Calls ``on_round(record)`` for every round line appended to ``metrics.jsonl``.

    A resumed run first truncates the lines after its checkpoint, so a shrinking file moves
    the read position back and the re-run rounds are reported again.
    """

    def __init__(
        self, run_dir: Path, on_round: Callable[[dict[str, Any]], None], interval: float = 1.0
    ) -> None:
        super().__init__(daemon=True)
        self.path = Path(run_dir) / "metrics.jsonl"
        self.on_round, self.interval = on_round, interval
        self.seen = len(read_records(self.path))
        self._stop_event = threading.Event()

    def poll(self) -> None:
        records = read_records(self.path)
        self.seen = min(self.seen, len(records))
        for record in records[self.seen :]:
            self.on_round(record)
        self.seen = len(records)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.poll()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
        self.poll()  # rounds written just before the process exited
