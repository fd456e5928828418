"""Per-client private state on disk: Sigma_k (and anything else that must never travel).

Follows the per-client-state pattern of FedRep in Flower's baselines, but persisted to disk
so it survives process restarts, a crashed worker and ``resume``. Files are written to a
temporary name, fsynced and renamed, so a reader sees either the old or the new state.

The state from before the latest round is kept beside it (``.prev``): when a server is killed
mid-round and resumes, that round runs again and must start from the state of the round before
it, not from what a client wrote during the aborted attempt.

A file that cannot be this module's (unreadable, not safetensors, truncated, without a round,
or holding non-finite or non-float tensors) is moved aside to ``<name>.corrupt`` and logged,
and reading falls back to the earlier state or to none: one damaged file must not fail the
client in every later round, and its bytes are kept for inspection.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

PERSONAL_FILE = "personal.safetensors"

log = logging.getLogger(__name__)


def _previous(path: Path) -> Path:
    return path.with_name(path.name.replace(".safetensors", ".prev.safetensors"))


def _read(path: Path) -> tuple[dict[str, torch.Tensor], int] | None:
    """The state and round saved at ``path``; None if there is none, or if the file is
    damaged (then it is moved aside, see the module docstring)."""
    if not path.is_file():
        return None
    try:
        with safe_open(path, framework="pt") as handle:
            server_round = json.loads((handle.metadata() or {})["server-round"])
            keys = list(handle.keys())  # safe_open is not a dict: no `in handle`
            state = {key: handle.get_tensor(key) for key in keys}
        if isinstance(server_round, bool) or not isinstance(server_round, int) or server_round < 0:
            raise ValueError(f"server-round {server_round!r} is not a round number")
        for key, value in state.items():
            if not value.is_floating_point() or not torch.isfinite(value).all():
                raise ValueError(f"tensor {key!r} is not finite floating point")
    except (OSError, KeyError, ValueError, SafetensorError) as error:  # JSON errors: ValueError
        aside = _set_aside(path)
        log.error("Personal state %s is damaged (%s); moved to %s", path, error, aside.name)
        return None
    return state, server_round


def _set_aside(path: Path) -> Path:
    """Rename ``path`` to the first free ``<name>.corrupt[.N]``; never overwrites."""
    aside, number = path.with_name(f"{path.name}.corrupt"), 0
    while aside.exists():
        number += 1
        aside = path.with_name(f"{path.name}.corrupt.{number}")
    os.replace(path, aside)
    return aside


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
