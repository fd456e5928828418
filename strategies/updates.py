"""Per-client flattened updates for the task-similarity-aware strategies.

``similarity-weighted`` and ``clustered`` compare individual updates Delta_k = theta_k - sent_k
(flattened over the shared adapter, keys sorted) and send each node its own adapter. This
module keeps what each node was sent, maps nodes to stable client ids, and builds the K x D
matrices of parameters and updates the maths in ``strategies.maths.similarity`` works on.

Privacy: these strategies need every client's individual update in the clear, so they cannot
run under secure aggregation (or any scheme that only reveals the sum).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from flwr.app import ArrayRecord, Message

from colora.wire import to_numpy, to_record
from strategies import messages
from strategies.maths.averaging import flatten_state, normalized_weights, unflatten_state

log = logging.getLogger(__name__)

PRIVACY_NOTE = (
    "strategy %s compares individual client updates, so it cannot run under "
    "secure aggregation: the server sees every client's update in the clear"
)


def warn_privacy(name: str) -> None:
    log.warning(PRIVACY_NOTE, name)


def templates(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    """Empty arrays with the keys, shapes and dtypes of ``arrays`` (for ``unflatten_state``)."""
    return {key: np.empty(a.shape, dtype=np.dtype(a.dtype)) for key, a in arrays.items()}


def weighted_mean(rows: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """sum_k p_k row_k with p = normalised ``weights`` (FedAvg of flattened states)."""
    return normalized_weights(weights).astype(rows.dtype) @ rows


class PersonalSender:
    """Sends each node its own flat adapter and remembers it, so Delta can be formed later."""

    def __init__(self) -> None:
        self.nodes = messages.NodeClients()
        self.sent: dict[int, np.ndarray] = {}  # node id -> flat adapter of its train message
        self.like: dict[str, np.ndarray] = {}  # layout of the shared adapter
        self._buffers: tuple[np.ndarray, np.ndarray] | None = None  # theta, Delta (K x D)

    def address(
        self,
        sampled: Iterable[Message],
        arrays: ArrayRecord,
        vector_of: Callable[[int | None], np.ndarray | None],
        *,
        remember: bool,
    ) -> list[Message]:
        """Readdress ``sampled`` with ``vector_of(client id)``, or ``arrays`` where it is None."""
        self.like = templates(arrays)
        global_vector: np.ndarray | None = None
        out = []
        for message in sampled:
            node = message.metadata.dst_node_id
            vector = vector_of(self.nodes.get(node))
            if vector is None:
                if global_vector is None:
                    global_vector = flatten_state(to_numpy(arrays), sorted(self.like))
                vector, record = global_vector, arrays
            else:
                record = to_record(unflatten_state(vector, self.like, sorted(self.like)))
            if remember:
                self.sent[node] = vector
            out.append(
                messages.readdress(
                    message, messages.node_content(record, message.content["config"])
                )
            )
        return out

    def updates(self, replies: Sequence[Message]) -> tuple[list[int], np.ndarray, np.ndarray]:
        """(client ids, theta K x D, Delta K x D) of the replies, in reply order.

        The two K x D matrices are buffers reused from round to round (valid until the next
        call): at K = 100 they are 2 GB, and faulting in fresh memory every round costs
        seconds. What was sent is forgotten here, so its arrays can be freed.
        """
        self.nodes.learn(replies)
        keys = sorted(self.like)
        shape = (len(replies), sum(int(np.size(self.like[key])) for key in keys))
        if self._buffers is None or self._buffers[0].shape != shape:
            self._buffers = None
            self._buffers = (np.empty(shape, np.float32), np.empty(shape, np.float32))
        thetas, deltas = self._buffers
        for row, reply in enumerate(replies):  # row by row: no K x D temporaries
            thetas[row] = flatten_state(messages.arrays_of(reply.content["arrays"]), keys)
            np.subtract(thetas[row], self.sent[reply.metadata.src_node_id], out=deltas[row])
        self.sent = {}
        return [messages.client_id(r) for r in replies], thetas, deltas

    def unflatten(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        return unflatten_state(vector, self.like, sorted(self.like))


def vectors_to_arrays(prefix: str, vectors: Mapping[int, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{prefix}{key}": value for key, value in vectors.items()}


def vectors_from_arrays(prefix: str, arrays: Mapping[str, np.ndarray]) -> dict[int, np.ndarray]:
    return {int(k.removeprefix(prefix)): v for k, v in arrays.items() if k.startswith(prefix)}
