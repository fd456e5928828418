"""Per-client flattened updates for the task-similarity-aware strategies.

``similarity-weighted`` and ``clustered`` compare individual updates Delta_k = theta_k - sent_k
(flattened over the shared adapter, keys sorted; measured on the factors, B alone or the
product B A, ``strategies.maths.update_measures``) and send each node its own adapter. This
module keeps what each node was sent, maps nodes to stable client ids, and builds the K x D
matrix of parameters and the K x k count sketches of the updates (``strategies.maths.sketch``)
that the maths in ``strategies.maths.similarity`` works on.

Privacy: these strategies need every client's individual update in the clear, so they cannot
run under secure aggregation (or any scheme that only reveals the sum).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flwr_strategy

from colora.wire import to_numpy, to_record
from runconfig.fields import one_of, option, require
from strategies import messages
from strategies.base import Strategy
from strategies.maths.averaging import flatten_state, normalized_weights, unflatten_state
from strategies.maths.reproducible import aligned_empty, weighted_row_sum
from strategies.maths.sketch import DEFAULT_WIDTH, count_sketch, sketch_rows
from strategies.maths.update_measures import MEASURES, UpdateMeasure

log = logging.getLogger(__name__)
_ROWS_PER_SKETCH = 8  # updates formed at once for the sketch (8 x D float32 of scratch)

PRIVACY_NOTE = (
    "strategy %s compares individual client updates, so it cannot run under "
    "secure aggregation: the server sees every client's update in the clear"
)


def measure_option():
    """``strategy.similarity-measure``: what S is measured on (shared by the similarity-aware
    strategies; the default was chosen from the bundled-model measurements in the README)."""
    return option(
        "product",
        "What update similarity is measured on: 'product' (per-module B A, sketched), "
        "'b' (B's update alone) or 'factors' (A and B concatenated).",
    )


def tau_option():
    """``strategy.tau``: temperature of the peer softmax, in units of each row's spread."""
    return option(
        1.0,
        "Temperature of the peer weights softmax over j != i of the row-standardised "
        "similarities (S_ij - mean_i) / std_i; smaller = sharper.",
    )


def check_similarity_options(config) -> None:
    """Raise ConfigError naming ``strategy.tau`` or ``strategy.similarity-measure``."""
    require(config.tau > 0, "strategy", "tau", config.tau, "must be > 0")
    one_of("strategy", "similarity_measure", config.similarity_measure, MEASURES)


def warn_privacy(name: str) -> None:
    log.warning(PRIVACY_NOTE, name)


def templates(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    """Empty arrays with the keys, shapes and dtypes of ``arrays`` (for ``unflatten_state``)."""
    return {key: np.empty(a.shape, dtype=np.dtype(a.dtype)) for key, a in arrays.items()}


def weighted_mean(rows: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """sum_k p_k row_k with p = normalised ``weights`` (FedAvg of flattened states), summed in
    float64 in row order so that it is bit-reproducible (``maths.reproducible``)."""
    return weighted_row_sum(rows, normalized_weights(weights), rows.dtype)


class PersonalSender:
    """Sends each node its own flat adapter and remembers it, so Delta can be formed later."""

    def __init__(self, sketch_width: int = DEFAULT_WIDTH, measure: str = "factors") -> None:
        self.sketch_width = sketch_width
        self.measure = measure  # what S is measured on (``maths.update_measures.MEASURES``)
        self.nodes = messages.NodeClients()
        self.sent: dict[int, np.ndarray] = {}  # node id -> flat adapter of its train message
        self.like: dict[str, np.ndarray] = {}  # layout of the shared adapter
        self._thetas: np.ndarray | None = None  # K x D, reused from round to round
        self._measures: tuple[dict, UpdateMeasure] | None = None  # (layout, its measure)

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
        """(client ids, theta K x D, sketched update K x k) of the replies, in reply order.

        theta is a 64-byte-aligned buffer reused from round to round (valid until the next
        call): at K = 100 it is 1 GB, and faulting in fresh memory every round costs seconds.
        The update is the ``measure`` of (theta_k, sent_k) (``maths.update_measures``: the
        factor difference, B's alone, or the sketched product B A); it is never held whole:
        a few rows at a time are formed and count-sketched (``maths.sketch``; exact when it
        has at most the sketch width), so the working memory is theta plus K x k. What was
        sent is forgotten here, so its arrays can be freed.
        """
        self.nodes.learn(replies)
        keys = sorted(self.like)
        shape = (len(replies), sum(int(np.size(self.like[key])) for key in keys))
        if self._thetas is None or self._thetas.shape != shape:
            self._thetas = None
            self._thetas = aligned_empty(shape, np.float32)
        thetas = self._thetas
        measure = self._measure({key: self.like[key].shape for key in keys})
        sketch = count_sketch(measure.size, self.sketch_width)
        sketches = np.empty((shape[0], sketch.out_width), np.float64)
        deltas = np.empty((min(_ROWS_PER_SKETCH, shape[0]), measure.size), np.float32)
        for start in range(0, shape[0], _ROWS_PER_SKETCH):
            chunk = replies[start : start + _ROWS_PER_SKETCH]
            for row, reply in enumerate(chunk, start=start):  # row by row: no K x D temporaries
                flatten_state(messages.arrays_of(reply.content["arrays"]), keys, out=thetas[row])
            sent = [self.sent[reply.metadata.src_node_id] for reply in chunk]
            rows = slice(start, start + len(chunk))
            measure.features_rows(thetas[rows], sent, out=deltas[: len(chunk)])
            sketches[rows] = sketch_rows(deltas[: len(chunk)], sketch)
        self.sent = {}
        return [messages.client_id(r) for r in replies], thetas, sketches

    def _measure(self, shapes: dict[str, tuple[int, ...]]) -> UpdateMeasure:
        """The round's ``UpdateMeasure``, kept while the layout stays: its workspaces are then
        reused from round to round instead of faulted in afresh."""
        if self._measures is None or self._measures[0] != shapes:
            self._measures = (shapes, UpdateMeasure(self.measure, shapes))
        return self._measures[1]

    def unflatten(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        return unflatten_state(vector, self.like, sorted(self.like))


def vectors_to_arrays(prefix: str, vectors: Mapping[int, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{prefix}{key}": value for key, value in vectors.items()}


def vectors_from_arrays(prefix: str, arrays: Mapping[str, np.ndarray]) -> dict[int, np.ndarray]:
    return {int(k.removeprefix(prefix)): v for k, v in arrays.items() if k.startswith(prefix)}


class SendsPersonal(Strategy, flwr_strategy.FedAvg):
    """A strategy that sends each client its own adapter and compares individual updates
    (similarity-weighted, clustered). Subclasses say which adapter a client gets
    (:meth:`personal`); a client without one gets the round's global arrays."""

    def __init__(self, config: Any, **common: Any) -> None:
        super().__init__(config, **common)
        self.sender = PersonalSender(measure=config.similarity_measure)
        warn_privacy(self.name)

    def personal(self, client: int | None) -> np.ndarray | None:
        """The flat adapter of ``client`` (None: not known, or none of its own yet)."""
        raise NotImplementedError

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        sampled = super().configure_train(server_round, arrays, config, grid)
        return self.sender.address(sampled, arrays, self.personal, remember=True)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        sampled = super().configure_evaluate(server_round, arrays, config, grid)
        return self.sender.address(sampled, arrays, self.personal, remember=False)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> None:
        self.sender.nodes.learn(replies)
