"""Per-client flat adapters a strategy keeps between rounds: the last round's in memory, the
rest on disk.

``similarity-weighted`` keeps each client's next adapter (its mixture) from the round that made
it until the client is sampled again. Held in memory that is one D-vector per client ever
sampled: 9.77 MB each at the bundled adapter's size, 9.77 GB for 1000 registered clients, and a
checkpoint that serialises all of them every round. Issue 13 asks that personal state stay on
disk. So the store holds in memory only the vectors of the last round (views of the block the
strategy mixed them into, which it reuses next round); when a round replaces them, the vectors
of clients not in the new round are written to ``<directory>/<client>-r<round>.npy`` and read
back memory-mapped when the client is sampled again.

Files are written once and never overwritten: the name says which round made the vector. A
checkpoint therefore records (client, round) pairs (:meth:`VectorStore.state`) and stays valid
while later rounds write later files. When a state is taken (a checkpoint is about to be
written), files that neither it nor the one before it (the checkpoint that becomes the
fallback) names are deleted. Without a directory (unit tests, benchmarks, a strategy used on
its own) every vector stays in memory, as before.

A file that is missing, unreadable, or not a finite float32 vector of the adapter's size is
not trusted: the client is forgotten with a warning and gets the global adapter, as a client
never seen does. Nothing read from the directory can crash a round.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d+)-r(\d+)\.npy$")
# state keys: the vectors held in memory, and (client, round, on disk) of every vector
VECTOR_PREFIX, INDEX_KEY = "mixture/", "mixture-index"


def file_name(client: int, server_round: int) -> str:
    return f"{client}-r{server_round}.npy"


class VectorStore(Mapping[int, np.ndarray]):
    """client id -> its flat float32 vector; a read-only mapping for the strategy's users."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self._memory: dict[int, tuple[int, np.ndarray]] = {}  # client -> (round, vector)
        self._disk: dict[int, int] = {}  # client -> round of its file
        self._named: set[str] = set()  # files the last state named: the newest checkpoint's
        self._size: int | None = None  # D, once a vector was held

    # -- the mapping ---------------------------------------------------------------------
    def __getitem__(self, client: int) -> np.ndarray:
        if client in self._memory:
            return self._memory[client][1]
        if client in self._disk:
            vector = self._read(client, self._disk[client])
            if vector is not None:
                return vector
        raise KeyError(client)

    def __contains__(self, client: object) -> bool:
        return client in self._memory or client in self._disk

    def __iter__(self) -> Iterator[int]:
        return iter(sorted({*self._memory, *self._disk}))

    def __len__(self) -> int:
        return len({*self._memory, *self._disk})

    def in_memory(self) -> int:
        """How many vectors are held in memory (the last round's, without a directory all)."""
        return len(self._memory)

    # -- rounds --------------------------------------------------------------------------
    def release(self, clients: Sequence[int]) -> None:
        """Before a round writes new vectors for ``clients`` into the block the last round's
        live in: drop the old vectors of ``clients`` and move every other one held in memory
        out of that block (to disk, or to a copy of its own without a directory)."""
        incoming = set(clients)
        for client in incoming:
            self._memory.pop(client, None)
            self._disk.pop(client, None)  # its file stays while a checkpoint names it
        for client, (made, vector) in list(self._memory.items()):
            if self.directory is None:
                self._memory[client] = (made, vector.copy())
            else:
                self._write(client, made, vector)
                del self._memory[client]
                self._disk[client] = made

    def hold(self, server_round: int, clients: Sequence[int], rows: np.ndarray) -> None:
        """``rows[i]`` is now the vector of ``clients[i]``, made in ``server_round`` (views:
        the caller keeps the block, and calls :meth:`release` before overwriting it)."""
        if len(clients) != len(rows):
            raise ValueError(f"{len(clients)} clients but {len(rows)} rows")
        for client, row in zip(clients, rows, strict=True):
            self._disk.pop(client, None)
            self._memory[client] = (server_round, row)
        if len(rows):
            self._size = int(rows.shape[1])

    # -- checkpoints ---------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """The arrays a checkpoint keeps: the vectors held in memory, and the (client,
        round, on disk) index of all. Files no longer named by this state or the one before
        are deleted (they can belong to no checkpoint that can still be loaded)."""
        arrays = {f"{VECTOR_PREFIX}{c}": v for c, (_, v) in sorted(self._memory.items())}
        rows = [(c, made, 0) for c, (made, _) in sorted(self._memory.items())]
        rows += [(c, made, 1) for c, made in sorted(self._disk.items())]
        arrays[INDEX_KEY] = np.asarray(rows, np.int64).reshape(-1, 3)
        named = {file_name(c, made) for c, made in self._disk.items()}
        self._collect(named | self._named)
        self._named = named
        return arrays

    def load(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore from :meth:`state`'s arrays (or a checkpoint written before the index,
        whose vectors were all in memory). Vectors in memory are copied: the checkpoint's
        arrays are not the strategy's to keep writing into."""
        vectors = {
            int(k.removeprefix(VECTOR_PREFIX)): np.array(v, np.float32)
            for k, v in arrays.items()
            if k.startswith(VECTOR_PREFIX)
        }
        index = np.asarray(arrays.get(INDEX_KEY, np.zeros((0, 3), np.int64)))
        if index.ndim != 2 or index.shape[1] != 3:
            log.warning("ignoring a malformed %s of shape %s", INDEX_KEY, index.shape)
            index = np.zeros((0, 3), np.int64)
        made = {int(c): int(r) for c, r, _ in index}
        on_disk = {int(c): int(r) for c, r, disk in index if disk}
        self._memory = {c: (made.get(c, 0), v) for c, v in vectors.items()}
        if self.directory is None and on_disk:
            log.warning("%d vectors are on disk but no directory was given", len(on_disk))
            on_disk = {}
        self._disk = {c: r for c, r in on_disk.items() if c not in self._memory}
        self._named = {file_name(c, r) for c, r in self._disk.items()}
        sizes = {v.shape[-1] for v in vectors.values()}
        self._size = sizes.pop() if len(sizes) == 1 else None

    # -- files ---------------------------------------------------------------------------
    def _write(self, client: int, made: int, vector: np.ndarray) -> None:
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / file_name(client, made)
        if path.exists():  # written before a restart: a name is only ever one vector
            return
        # Atomic against a killed process, like the checkpoints (no fsync: after a power cut
        # a torn file fails _read's checks and the client gets the global adapter).
        tmp = self.directory / f".{path.name}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(vector, np.float32), allow_pickle=False)
        os.replace(tmp, path)

    def _read(self, client: int, made: int) -> np.ndarray | None:
        assert self.directory is not None
        path = self.directory / file_name(client, made)
        try:
            vector = np.load(path, mmap_mode="r", allow_pickle=False)
            reason = self._check(vector)
        except (OSError, ValueError) as error:
            reason = f"unreadable ({error})"
        if reason is None:
            return vector
        log.warning("forgetting client %d's stored adapter %s: %s", client, path, reason)
        self._disk.pop(client, None)
        return None

    def _check(self, vector: np.ndarray) -> str | None:
        if vector.dtype != np.float32 or vector.ndim != 1:
            return f"expected a float32 vector, got {vector.dtype} of shape {vector.shape}"
        if self._size is not None and vector.shape[0] != self._size:
            return f"expected {self._size} values, got {vector.shape[0]}"
        if not np.all(np.isfinite(vector)):
            return "contains NaN or Inf"
        return None

    def _collect(self, keep: set[str]) -> None:
        if self.directory is None or not self.directory.is_dir():
            return
        for path in self.directory.iterdir():
            stale_tmp = path.name.startswith(".") and path.name.endswith(".tmp")
            if stale_tmp or (_NAME.match(path.name) and path.name not in keep):
                path.unlink(missing_ok=True)
