"""Per-client flattened updates for the task-similarity-aware strategies.

``similarity-weighted`` and ``clustered`` compare individual updates Delta_k = theta_k - sent_k
(flattened over the shared adapter, keys sorted; measured on the factors, B alone or the
product B A, ``strategies.maths.update_measures``) and send each node its own adapter. This
module keeps what each node was sent, maps nodes to stable client ids, and gives the K x D
parameters (read from the replies in blocks, never copied whole), their FedAvg mean and the
K x k count sketches of the updates (``strategies.maths.sketch``) that the maths in
``strategies.maths.similarity`` works on.

Privacy: these strategies need every client's individual update in the clear, so they cannot
run under secure aggregation (or any scheme that only reveals the sum).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flwr_strategy

from colora.wire import to_numpy, to_record
from runconfig.fields import one_of, option, require
from strategies import messages
from strategies.base import Strategy
from strategies.maths.averaging import (
    ReplyRows,
    flatten_state,
    normalized_weights,
    unflatten_state,
)
from strategies.maths.reproducible import CHUNK, add_weighted_rows, aligned_empty
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


@dataclass(frozen=True)
class RoundUpdates:
    """What ``PersonalSender.updates`` reads from a round's replies, rows in reply order."""

    clients: list[int]
    thetas: ReplyRows  # K x D parameters, read from the replies in blocks
    sketches: np.ndarray  # K x k count sketches of the measured updates
    mean: np.ndarray  # (D,) float32: sum_k p_k theta_k, the FedAvg mean


def _accumulate(total: np.ndarray, rows: np.ndarray, p: np.ndarray) -> None:
    """total += sum_k p_k rows[k] chunk by chunk with ``add_weighted_rows``, the operations of
    ``weighted_row_sum``, so over all rows of a round the same bits."""
    term = np.empty(min(CHUNK, total.size))
    for start in range(0, total.size, CHUNK):
        stop = min(start + CHUNK, total.size)
        part = [row[start:stop] for row in rows]
        add_weighted_rows(total[start:stop], part, p, term[: stop - start])


class PersonalSender:
    """Sends each node its own flat adapter and remembers it, so Delta can be formed later."""

    def __init__(self, sketch_width: int = DEFAULT_WIDTH, measure: str = "factors") -> None:
        self.sketch_width = sketch_width
        self.measure = measure  # what S is measured on (``maths.update_measures.MEASURES``)
        self.nodes = messages.NodeClients()
        self.sent: dict[int, np.ndarray] = {}  # node id -> flat adapter of its train message
        self.like: dict[str, np.ndarray] = {}  # layout of the shared adapter
        self._scratch: np.ndarray | None = None  # a few flat rows, reused from round to round
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

    def updates(self, replies: Sequence[Message], weights: Sequence[float]) -> RoundUpdates:
        """The replies' client ids, parameters, sketched updates and FedAvg mean, in reply
        order (``RoundUpdates``); ``weights`` are the FedAvg weights of the replies.

        theta is ``averaging.ReplyRows``: the replies' own arrays behind a K x D interface,
        never copied whole (at K = 100 a copy is a gigabyte, and faulting in fresh memory
        costs seconds); the mixtures and cluster means read it in blocks. The update is the
        ``measure`` of (theta_k, sent_k) (``maths.update_measures``: the factor difference,
        B's alone, or the sketched product B A); it is never held whole: a few rows at a time
        are flattened into a small scratch buffer, measured and count-sketched
        (``maths.sketch``; exact when it has at most the sketch width), so the working memory
        is that scratch plus K x k. The mean is accumulated from the same scratch rows
        (``_accumulate``: the bits of ``weighted_row_sum``, without reading the replies a
        second time). What was sent is forgotten here, so its arrays can be freed.
        """
        self.nodes.learn(replies)
        p = normalized_weights(weights)
        if len(p) != len(replies):
            raise ValueError(f"got {len(replies)} replies but {len(p)} weights")
        keys = sorted(self.like)
        states = [messages.arrays_of(reply.content["arrays"]) for reply in replies]
        thetas = ReplyRows(states, self.like, keys, np.float32)
        measure = self._measure({key: self.like[key].shape for key in keys})
        sketch = count_sketch(measure.size, self.sketch_width)
        sketches = np.empty((len(replies), sketch.out_width), np.float64)
        scratch = self._scratch_rows(min(_ROWS_PER_SKETCH, len(replies)), thetas.shape[1])
        deltas = np.empty((scratch.shape[0], measure.size), np.float32)
        total = np.zeros(thetas.shape[1])
        for start in range(0, len(replies), _ROWS_PER_SKETCH):
            chunk = replies[start : start + _ROWS_PER_SKETCH]
            rows = scratch[: len(chunk)]
            for row, state in zip(rows, states[start : start + len(chunk)], strict=True):
                flatten_state(state, keys, out=row)
            _accumulate(total, rows, p[start : start + len(chunk)])
            sent = [self.sent[reply.metadata.src_node_id] for reply in chunk]
            measure.features_rows(rows, sent, out=deltas[: len(chunk)])
            sketches[start : start + len(chunk)] = sketch_rows(deltas[: len(chunk)], sketch)
        self.sent = {}
        mean = aligned_empty(thetas.shape[1], np.float32)
        mean[...] = total
        return RoundUpdates([messages.client_id(r) for r in replies], thetas, sketches, mean)

    def _scratch_rows(self, count: int, width: int) -> np.ndarray:
        """An aligned ``count`` x ``width`` float32 buffer, kept from round to round (the
        product measure's stacked matmuls want aligned rows; fresh pages cost time)."""
        if self._scratch is None or self._scratch.shape != (count, width):
            self._scratch = None
            self._scratch = aligned_empty((count, width), np.float32)
        return self._scratch

    def _measure(self, shapes: dict[str, tuple[int, ...]]) -> UpdateMeasure:
        """The round's ``UpdateMeasure``, kept while the layout stays: its workspaces are then
        reused from round to round instead of faulted in afresh."""
        if self._measures is None or self._measures[0] != shapes:
            self._measures = (shapes, UpdateMeasure(self.measure, shapes))
        return self._measures[1]

    def unflatten(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        return unflatten_state(vector, self.like, sorted(self.like))

    @property
    def size(self) -> int:
        """D: the values of a flat adapter of the current layout."""
        return sum(int(v.size) for v in self.like.values())


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
        self.timeout: float | None = None  # of the identify queries (run.round-timeout)
        warn_privacy(self.name)

    def attach(self, directory: Path, timeout: float | None) -> None:
        super().attach(directory, timeout)
        self.timeout = timeout

    def personal(self, client: int | None) -> np.ndarray | None:
        """The flat adapter of ``client`` (None: not known, or none of its own yet)."""
        raise NotImplementedError

    def clients_with_state(self) -> set[int]:
        """The clients this strategy holds an adapter of their own for."""
        raise NotImplementedError

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        sampled = list(super().configure_train(server_round, arrays, config, grid))
        self.identify(sampled, grid)
        return self.sender.address(sampled, arrays, self.personal, remember=True)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        sampled = list(super().configure_evaluate(server_round, arrays, config, grid))
        self.identify(sampled, grid)
        return self.sender.address(sampled, arrays, self.personal, remember=False)

    def identify(self, sampled: Sequence[Message], grid: Grid) -> None:
        """Ask the sampled nodes this strategy cannot place which client they host, when it
        holds adapters of clients it has no node for.

        Node ids are learnt from replies, and they change when nodes restart (in simulation,
        every start draws new ones). After a resume the strategy holds every client's adapter
        from its checkpoint but knows no node: without asking, the first round would send
        every client the global adapter and a resumed run would not continue the run it
        resumes. In a run that was never interrupted every sampled client with an adapter
        has replied before, so nothing is asked. A node that does not answer, or answers
        with no valid id, keeps getting the global adapter."""
        unknown = [m.metadata.dst_node_id for m in sampled]
        unknown = [node for node in unknown if self.sender.nodes.get(node) is None]
        if not unknown or not self.clients_with_state() - self.sender.nodes.clients():
            return
        try:
            replies = grid.send_and_receive(
                messages.identify_messages(unknown), timeout=self.timeout
            )
        except Exception:  # a node or the grid failing must not end the run
            log.exception("asking %d nodes for their client ids failed", len(unknown))
            return
        learnt = self.sender.nodes.learn_identities(replies, unknown)
        log.info("%s: %d of %d nodes named their client", self.name, learnt, len(unknown))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> None:
        self.sender.nodes.learn(replies)
