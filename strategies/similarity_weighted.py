"""Similarity-weighted aggregation: each client gets its own mixture of its peers' adapters.

fedcolora's own strategy, in the spirit of FedAMP (Huang et al. 2021,
https://arxiv.org/abs/2007.03797) and FedMosaic's relevance weighting: with Delta_k client k's
update this round, measured on ``strategy.similarity-measure``
(``strategies.maths.update_measures``: by default the per-module product B A, sketched),

    S_ij = cos(Delta_i, Delta_j),   z_ij = (S_ij - mean_i) / std_i  over the peers j != i,
    W_ii = beta,   W_ij = (1 - beta) * softmax_{j != i}(z_ij / tau),
    theta'_i = (1 - lambda) * sum_j p_j theta_j + lambda * sum_j W_ij theta_j,

so clients on similar tasks help each other more and lambda = 0 is FedAvg. The self weight
beta is its own parameter and the peers' softmax is taken on row-standardised similarities
(``similarity.peer_weights``), so the self-similarity S_ii = 1 does not swamp the peers and
tau is in units of each client's spread (issue 11). Each row of W then keeps the client and
its ``strategy.top-peers`` = m largest peer weights, renormalised to sum to 1; the other
peers' weights are dropped (``strategies.maths.mixture``, issue 13: K (m + 1) D work instead
of the K^2 D of every dense mixture; m >= K - 1 is the dense rule). S is computed from count
sketches of the updates (``strategies.maths.sketch``: O(K D) instead of O(K^2 D), with
the error bound stated there; exact for adapters of at most 8192 values). Client i's next train
and evaluate messages carry theta'_i; a node the server has not heard from yet gets the FedAvg
mean, which is also the round's global arrays. S is logged every round (``metrics.jsonl``) and
kept, with its history and the mixtures, in the strategy state.

Privacy: this needs individual updates, so it cannot run under secure aggregation; a warning
says so at start.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord

from colora.wire import to_record
from runconfig.fields import option, require
from strategies import messages, updates
from strategies.base import in_the_clear
from strategies.maths.mixture import sparse_mixtures, top_peers
from strategies.maths.similarity import cosine_matrix, peer_weights
from strategies.ordering import by_client
from strategies.updates import SendsPersonal
from strategies.vector_store import VectorStore

_SIM = "similarity/"  # state keys: similarity/<round>/..., and the mixtures' (vector_store)
log = logging.getLogger(__name__)

IN_THE_CLEAR = in_the_clear("similarity-weighted mixes clients by the similarity of their updates")


@dataclass(frozen=True)
class SimilarityWeightedConfig:
    tau: float = updates.tau_option()
    self_weight: float = option(
        0.5, "beta in [0, 1]: each client's weight on its own adapter; peers share 1 - beta."
    )
    mixing: float = option(1.0, "lambda in [0, 1]: 0 = FedAvg, 1 = each client's own mixture.")
    similarity_measure: str = updates.measure_option()
    top_peers: int = option(
        8, "m: peers each client mixes, its m largest weights renormalised; >= K-1 = all."
    )

    def __post_init__(self) -> None:
        updates.check_similarity_options(self)
        require(
            0 <= self.self_weight <= 1,
            "strategy",
            "self_weight",
            self.self_weight,
            "must be in [0, 1]",
        )
        require(self.top_peers >= 0, "strategy", "top_peers", self.top_peers, "must be >= 0")
        require(0 <= self.mixing <= 1, "strategy", "mixing", self.mixing, "must be in [0, 1]")


@dataclass(frozen=True)
class SimilarityRound:
    """One round's similarity S and peer weights W, rows and columns in ``clients`` order."""

    server_round: int
    clients: tuple[int, ...]
    similarity: np.ndarray
    weights: np.ndarray


class SimilarityWeighted(
    SendsPersonal, name="similarity-weighted", individual_updates=IN_THE_CLEAR
):
    """Per-client mixtures: beta on itself, 1 - beta over peers by standardised similarity."""

    def __init__(self, config: SimilarityWeightedConfig, **common) -> None:
        super().__init__(config, **common)
        self.mixtures = VectorStore()  # client id -> its next flat adapter; on disk if given
        self._mixed: np.ndarray | None = None  # K x D block the mixtures of a round live in
        self.history: list[SimilarityRound] = []

    def attach(self, directory: Path, timeout: float | None) -> None:
        """The mixtures of clients absent from the last round go to ``directory/mixtures``."""
        super().attach(directory, timeout)
        self.mixtures.directory = Path(directory) / "mixtures"

    def clients_with_state(self) -> set[int]:
        return set(self.mixtures)

    def personal(self, client: int | None) -> np.ndarray | None:
        vector = self.mixtures.get(client) if client is not None else None
        if vector is not None and vector.shape != (self.sender.size,):
            why = f"{vector.shape} values, not {self.sender.size}"
            log.warning("client %s: stored mixture of %s; sending the global adapter", client, why)
            return None
        return vector

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = by_client(replies)
        got = self.sender.updates(replies, messages.example_counts(replies))
        clients, S = got.clients, cosine_matrix(got.sketches)
        W = self._weights(S)
        # Move the mixtures of clients absent this round out of last round's K x D block (to
        # disk, or to copies), so that block is free: what was sent was read by updates().
        self.mixtures.release(clients)
        # Write this round's mixtures into it (its memory is reused, not faulted in afresh).
        if self._mixed is not None and self._mixed.shape != got.thetas.shape:
            self._mixed = None  # freed before the new block is allocated
        sparse = top_peers(W, self.config.top_peers)
        self._mixed = sparse_mixtures(
            got.thetas, sparse, got.mean, self.config.mixing, out=self._mixed
        )
        self.mixtures.hold(server_round, clients, self._mixed)
        self.history.append(SimilarityRound(server_round, tuple(clients), S, W))
        return to_record(self.sender.unflatten(got.mean)), None

    def _weights(self, S: np.ndarray) -> np.ndarray:
        return peer_weights(S, self.config.self_weight, self.config.tau)

    def round_log(self, server_round: int) -> dict:
        last = self.history[-1] if self.history else None
        if last is None or last.server_round != server_round:
            return {}
        return {
            "similarity": {
                "clients": [str(c) for c in last.clients],
                "matrix": np.round(last.similarity, 6).tolist(),
                "weights": np.round(last.weights, 6).tolist(),
            }
        }

    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = self.mixtures.state()
        for entry in self.history:
            arrays[f"{_SIM}{entry.server_round}/matrix"] = entry.similarity
            arrays[f"{_SIM}{entry.server_round}/clients"] = np.asarray(entry.clients, np.int64)
        return arrays

    def load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.mixtures.load(arrays)
        rounds = sorted({int(k.split("/")[1]) for k in arrays if k.startswith(_SIM)})
        self.history = []
        for r in rounds:
            S = np.asarray(arrays[f"{_SIM}{r}/matrix"])
            clients = tuple(int(c) for c in arrays[f"{_SIM}{r}/clients"])
            self.history.append(SimilarityRound(r, clients, S, self._weights(S)))
