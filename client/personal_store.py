"""Per-client private state on disk: Sigma_k (and anything else that must never travel).

Follows the per-client-state pattern of FedRep in Flower's baselines, but persisted to disk
so it survives process restarts, a crashed worker and ``resume``. Files are written to a
temporary name, fsynced and renamed, so a reader sees either the old or the new state.
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


def client_dir(root: Path, client_id: str) -> Path:
    return Path(root) / f"client-{client_id}"


def save_personal(path: Path, state: dict[str, torch.Tensor], *, server_round: int) -> None:
    """Atomically write ``state`` to ``path`` with the round it belongs to."""
    path.parent.mkdir(parents=True, exist_ok=True)
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


def load_personal(path: Path) -> tuple[dict[str, torch.Tensor], int] | None:
    """``(state, server_round)`` saved at ``path``, or None if the client has none yet."""
    if not path.is_file():
        return None
    with safe_open(path, framework="pt") as handle:
        server_round = json.loads(handle.metadata().get("server-round", "0"))
        keys = list(handle.keys())  # safe_open is not a dict: no `in handle`
        return {key: handle.get_tensor(key) for key in keys}, server_round
