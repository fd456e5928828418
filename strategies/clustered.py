"""Clustered aggregation: one shared adapter per cluster of clients with similar updates.

fedcolora's own strategy, in the spirit of Clustered FL (Sattler et al. 2020,
https://arxiv.org/abs/1910.01991) and IFCA (Ghosh et al. 2020, https://arxiv.org/abs/2006.04088).
No task labels are used: clusters come from S_ij = cos(Delta_i, Delta_j) of the clients'
updates (measured on ``strategy.similarity-measure``, ``strategies.maths.update_measures``), by
spectral clustering of the row-standardised peer affinity with k from the eigengap, or by
complete linkage cut at a distance 1 - S (``strategies.maths.similarity``).

- Warm-up: rounds 1..R0 are FedAvg. The split uses the updates of round max(R0, 1), which all
  start from the same global adapter, so their directions are comparable.
- Then each cluster keeps its own adapter, the example-weighted mean of its members' replies,
  sent to its members for training and evaluation.
- Membership is sticky: a client keeps its cluster; a client first seen after the split joins
  the cluster whose mean update is most cosine-similar to its own.
- Assignments (keyed by client id), cluster sizes and S are logged every round.
- S and the cluster directions live in the space of count sketches of the updates
  (``strategies.maths.sketch``: O(K D) instead of O(K^2 D); exact for adapters of at most
  8192 values), so the directions kept in the state are k-vectors, not adapters.

Privacy: this needs individual updates, so it cannot run under secure aggregation; a warning
says so at start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord

from colora.wire import to_record
from runconfig.fields import one_of, option, require
from strategies import messages, updates
from strategies.base import in_the_clear
from strategies.maths.averaging import normalized_weights
from strategies.maths.reproducible import weighted_row_sum
from strategies.maths.similarity import (
    assign_to_nearest,
    complete_linkage,
    cosine_matrix,
    spectral_clusters,
)
from strategies.maths.sketch import count_sketch, sketch_rows
from strategies.ordering import by_client
from strategies.updates import SendsPersonal

METHODS = ("spectral", "linkage")
_ADAPTER, _DIRECTION, _ASSIGNMENT = "cluster-adapter/", "cluster-direction/", "cluster-assignment"

IN_THE_CLEAR = in_the_clear("clustered averages within groups of clients with similar updates")


@dataclass(frozen=True)
class ClusteredConfig:
    warmup_rounds: int = option(1, "FedAvg rounds before the split (at least one round runs).")
    cluster_method: str = option(
        "spectral",
        "'spectral' (k from the eigengap) or 'linkage' "
        "(complete linkage cut at cluster-threshold).",
    )
    cluster_threshold: float = option(
        0.5, "linkage: the largest distance 1 - cos between two clients of one cluster."
    )
    max_clusters: int = option(0, "spectral: the largest k considered; 0 = clients - 1.")
    tau: float = updates.tau_option()
    similarity_measure: str = updates.measure_option()

    def __post_init__(self) -> None:
        updates.check_similarity_options(self)
        require(
            self.warmup_rounds >= 0, "strategy", "warmup_rounds", self.warmup_rounds, "must be >= 0"
        )
        one_of("strategy", "cluster_method", self.cluster_method, METHODS)
        require(
            0 <= self.cluster_threshold <= 2,
            "strategy",
            "cluster_threshold",
            self.cluster_threshold,
            "must be in [0, 2]",
        )
        require(
            self.max_clusters >= 0, "strategy", "max_clusters", self.max_clusters, "must be >= 0"
        )


class Clustered(SendsPersonal, name="clustered", individual_updates=IN_THE_CLEAR):
    """Clusters found from update similarity; FedAvg within each cluster."""

    def __init__(self, config: ClusteredConfig, **common) -> None:
        super().__init__(config, **common)
        self.assignment: dict[int, int] = {}  # client id -> cluster id, sticky once set
        self.adapters: dict[int, np.ndarray] = {}  # cluster id -> flat adapter
        self.directions: dict[int, np.ndarray] = {}  # cluster id -> mean update, for newcomers
        self.similarity: tuple[int, list[int], np.ndarray] | None = None  # round, clients, S

    def personal(self, client: int | None) -> np.ndarray | None:
        cluster = self.assignment.get(client) if client is not None else None
        return self.adapters.get(cluster) if cluster is not None else None

    def clients_with_state(self) -> set[int]:
        return {c for c, cluster in self.assignment.items() if cluster in self.adapters}

    def _split(self, clients: list[int], S: np.ndarray) -> None:
        if self.config.cluster_method == "spectral":
            labels = spectral_clusters(
                S, max_k=self.config.max_clusters or None, tau=self.config.tau
            )
        else:
            labels = complete_linkage(S, threshold=self.config.cluster_threshold)
        self.assignment = {c: int(label) for c, label in zip(clients, labels, strict=True)}

    def _join(self, clients: list[int], sketches: np.ndarray) -> None:
        """Sticky membership: only clients never assigned get a cluster, the nearest one."""
        ids = sorted(self.directions)
        if not ids:
            return
        centroids = np.stack([self.directions[i] for i in ids])
        if centroids.shape[1] != sketches.shape[1]:
            # A checkpoint written before updates were sketched holds whole mean updates (of
            # the factors: resume it with similarity-measure = "factors" to compare alike).
            width = self.sender.sketch_width
            centroids = sketch_rows(centroids, count_sketch(centroids.shape[1], width))
        for client, delta in zip(clients, sketches, strict=True):
            if client not in self.assignment:
                self.assignment[client] = ids[assign_to_nearest(delta, centroids)]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = by_client(replies)
        p = np.asarray(messages.example_counts(replies))
        got = self.sender.updates(replies, p)
        clients, sketches = got.clients, got.sketches
        S = cosine_matrix(sketches)
        self.similarity = (server_round, clients, S)
        if not self.assignment and server_round >= max(self.config.warmup_rounds, 1):
            self._split(clients, S)
        else:
            self._join(clients, sketches)
        labels = np.array([self.assignment.get(c, -1) for c in clients])
        for cluster in sorted(set(labels.tolist()) - {-1}):
            # The cluster's FedAvg weights, zero outside it: the sum reads its members' rows
            # only, a chunk at a time straight from their replies, in float64 and row order.
            weights = normalized_weights(np.where(labels == cluster, p, 0.0))
            self.adapters[cluster] = weighted_row_sum(got.thetas, weights)
            self.directions[cluster] = weighted_row_sum(sketches, weights)
        return to_record(self.sender.unflatten(got.mean)), None

    def round_log(self, server_round: int) -> dict:
        sizes: dict[str, int] = {}
        for cluster in self.assignment.values():
            sizes[str(cluster)] = sizes.get(str(cluster), 0) + 1
        log = {
            "clusters": {str(c): k for c, k in sorted(self.assignment.items())},
            "cluster_sizes": sizes,
        }
        if self.similarity is not None and self.similarity[0] == server_round:
            log["similarity"] = {
                "clients": [str(c) for c in self.similarity[1]],
                "matrix": np.round(self.similarity[2], 6).tolist(),
            }
        return log

    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            **updates.vectors_to_arrays(_ADAPTER, self.adapters),
            **updates.vectors_to_arrays(_DIRECTION, self.directions),
        }
        arrays[_ASSIGNMENT] = np.asarray(sorted(self.assignment.items()), np.int64).reshape(-1, 2)
        return arrays

    def load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.adapters = updates.vectors_from_arrays(_ADAPTER, arrays)
        self.directions = updates.vectors_from_arrays(_DIRECTION, arrays)
        pairs = np.asarray(arrays.get(_ASSIGNMENT, np.zeros((0, 2), np.int64)))
        self.assignment = {int(c): int(k) for c, k in pairs}
