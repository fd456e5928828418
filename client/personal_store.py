"""Per-client private state on disk: Sigma_k (and anything else that must never travel).

Follows the per-client-state pattern of FedRep in Flower's baselines, but persisted to disk
so it survives process restarts, a crashed worker and ``resume``. Files are written to a
temporary name, fsynced and renamed, so a reader sees either the old or the new state.

The state from before the latest round is kept beside it (``.prev``): when a server is killed
mid-round and resumes, that round runs again and must start from the state of the round before
it, not from what a client wrote during the aborted attempt.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

PERSONAL_FILE = "personal.safetensors"


def _previous(path: Path) -> Path:
    return path.with_name(path.name.replace(".safetensors", ".prev.safetensors"))


def _read(path: Path) -> tuple[dict[str, torch.Tensor], int] | None:
    if not path.is_file():
        return None
    with safe_open(path, framework="pt") as handle:
        server_round = json.loads(handle.metadata().get("server-round", "0"))
        keys = list(handle.keys())  # safe_open is not a dict: no `in handle`
        return {key: handle.get_tensor(key) for key in keys}, server_round


def save_personal(path: Path, state: dict[str, torch.Tensor], *, server_round: int) -> None:
    """Atomically write ``state`` for ``server_round``, keeping the last earlier round's state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    current = _read(path)
    if current is not None and current[1] < server_round:
        os.replace(path, _previous(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        tensors = {k: v.detach().float().contiguous().cpu() for k, v in state.items()}
        save_file(tensors, tmp, metadata={"server-round": json.dumps(server_round)})
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_personal(
    path: Path, *, before_round: int | None = None
) -> tuple[dict[str, torch.Tensor], int] | None:
    """``(state, server_round)`` saved at ``path``, or None if the client has none yet.

    With ``before_round`` the newest state saved for an earlier round is returned, so a
    re-run round never sees what an aborted attempt of the same round wrote.
    """
    for candidate in (path, _previous(path)):
        found = _read(candidate)
        if found is not None and (before_round is None or found[1] < before_round):
            return found
    return None
