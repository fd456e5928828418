"""On-disk JSON cache of mined summarization pairs (:mod:`codetasks.data.summarization`).

Mining the standard library takes seconds, so the result is stored under
``${FEDCOLORA_CACHE:-~/.cache/fedcolora}/summarization/<key>.json``. The key hashes the source
directory, the Python version (``ast`` and the stdlib change between versions), the miner's
version, and every mined file's path, size and mtime, so edited sources are mined again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from codetasks.examples import Example

log = logging.getLogger(__name__)

# Bump when the mining rules change, so that old caches are ignored.
MINER_VERSION = "1"


def cache_root() -> Path:
    """``$FEDCOLORA_CACHE`` or ``~/.cache/fedcolora``."""
    return Path(os.environ.get("FEDCOLORA_CACHE") or Path.home() / ".cache" / "fedcolora")


def cache_path(source_dir: Path, files: list[Path]) -> Path:
    """The cache file for mining ``files`` under ``source_dir``."""
    digest = hashlib.sha256(f"{MINER_VERSION}\0{source_dir}\0{sys.version}".encode())
    for path in files:
        stat = path.stat()
        digest.update(
            f"\0{path.relative_to(source_dir)}:{stat.st_size}:{stat.st_mtime_ns}".encode()
        )
    return cache_root() / "summarization" / f"{digest.hexdigest()[:24]}.json"


def _example_from_json(row: dict[str, Any]) -> Example:
    return Example(**{**row, "tests": tuple(row["tests"])})


def read(path: Path) -> dict[str, Any] | None:
    """The cached :class:`MiningResult` fields, or ``None`` if absent or unreadable."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        splits = {
            split: [_example_from_json(row) for row in rows]
            for split, rows in payload["splits"].items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None  # a missing or corrupt cache is simply mined again
    return payload | {"splits": splits}


def write(path: Path, result: Any) -> None:
    """Store a :class:`MiningResult` atomically (a reader never sees a half-written file).

    A cache that cannot be written (``FEDCOLORA_CACHE`` names a file, a read-only or full disk)
    only costs mining again next time, so it is a warning, not the end of the run.
    """
    payload = dataclasses.asdict(result)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(payload, out)
        os.replace(tmp, path)
    except OSError as error:
        log.warning("summarization cache not written to %s: %s", path, error)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
