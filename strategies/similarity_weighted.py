"""Similarity-weighted aggregation: each client gets its own mixture of its peers' adapters.

fedcolora's own strategy, in the spirit of FedAMP (Huang et al. 2021,
https://arxiv.org/abs/2007.03797) and FedMosaic's relevance weighting: with Delta_k the flattened
update of client k this round,

    S_ij = cos(Delta_i, Delta_j),   W_ij = softmax_j(S_ij / tau),
    theta'_i = (1 - lambda) * sum_j p_j theta_j + lambda * sum_j W_ij theta_j,

so clients on similar tasks help each other more and lambda = 0 is FedAvg. Each row of W keeps
the client and its ``strategy.top-peers`` = m largest peer weights, renormalised to sum to 1; the
other peers' weights are dropped (``strategies.maths.mixture``, issue 13: K (m + 1) D work
instead of the K^2 D of every dense mixture; m >= K - 1 is the dense rule). S is computed from
count sketches of the updates (``strategies.maths.sketch``: O(K D) instead of O(K^2 D), with
the error bound stated there; exact for adapters of at most 8192 values). Client i's next train
and evaluate messages carry theta'_i; a node the server has not heard from yet gets the FedAvg
mean, which is also the round's global arrays. S is logged every round (``metrics.jsonl``) and
kept, with its history and the mixtures, in the strategy state.

Privacy: this needs individual updates, so it cannot run under secure aggregation; a warning
says so at start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flwr_strategy

from colora.wire import to_record
from runconfig.fields import option, require
from strategies import messages, updates
from strategies.maths.mixture import sparse_mixtures, top_peers
from strategies.maths.similarity import cosine_matrix, mixing_weights
from strategies.ordering import by_client

_MIX, _SIM = "mixture/", "similarity/"  # state keys: mixture/<client>, similarity/<round>/...


@dataclass(frozen=True)
class SimilarityWeightedConfig:
    tau: float = option(0.5, "Temperature of the peer weights softmax_j(S_ij / tau).")
    mixing: float = option(1.0, "lambda in [0, 1]: 0 = FedAvg, 1 = each client's own mixture.")
    top_peers: int = option(
        8, "m: peers each client mixes, its m largest weights renormalised; >= K-1 = all."
    )

    def __post_init__(self) -> None:
        require(self.tau > 0, "strategy", "tau", self.tau, "must be > 0")
        require(self.top_peers >= 0, "strategy", "top_peers", self.top_peers, "must be >= 0")
        require(0 <= self.mixing <= 1, "strategy", "mixing", self.mixing, "must be in [0, 1]")


@dataclass(frozen=True)
class SimilarityRound:
    """One round's similarity S and peer weights W, rows and columns in ``clients`` order."""

    server_round: int
    clients: tuple[int, ...]
    similarity: np.ndarray
    weights: np.ndarray


class SimilarityWeighted(flwr_strategy.FedAvg):
    """Per-client softmax(cos / tau) mixtures of the clients' adapters."""

    name = "similarity-weighted"
    individual_updates = (
        "similarity-weighted mixes each client's own aggregate from the cosine similarity of "
        "every pair of updates, so the server needs each update in the clear."
    )

    def __init__(self, config: SimilarityWeightedConfig, **common) -> None:
        super().__init__(**common)
        self.config = config
        self.sender = updates.PersonalSender()
        self.mixtures: dict[int, np.ndarray] = {}  # client id -> its next flat adapter
        self._mixed: np.ndarray | None = None  # K x D block the mixtures of a round live in
        self.history: list[SimilarityRound] = []
        updates.warn_privacy(self.name)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        sampled = super().configure_train(server_round, arrays, config, grid)
        return self.sender.address(sampled, arrays, self._mixture, remember=True)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        sampled = super().configure_evaluate(server_round, arrays, config, grid)
        return self.sender.address(sampled, arrays, self._mixture, remember=False)

    def _mixture(self, client: int | None) -> np.ndarray | None:
        return self.mixtures.get(client) if client is not None else None

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = by_client(replies)
        if len(replies) < self.min_train_nodes:
            return None, None
        clients, thetas, sketches = self.sender.updates(replies)
        p = messages.example_counts(replies)
        S = cosine_matrix(sketches)
        W = mixing_weights(S, self.config.tau)
        # Keep copies for clients absent this round, so last round's K x D block is freed
        # before the new one is allocated (its memory is then reused, not faulted in afresh).
        self.mixtures = {c: v.copy() for c, v in self.mixtures.items() if c not in set(clients)}
        # Last round's K x D block is now unused (what was sent was read by updates(), the
        # absent clients' rows were copied): write this round's mixtures into it.
        if self._mixed is not None and self._mixed.shape != thetas.shape:
            self._mixed = None  # freed before the new block is allocated
        mean = updates.weighted_mean(thetas, p)
        sparse = top_peers(W, self.config.top_peers)
        self._mixed = sparse_mixtures(thetas, sparse, mean, self.config.mixing, out=self._mixed)
        self.mixtures.update(zip(clients, self._mixed, strict=True))
        self.history.append(SimilarityRound(server_round, tuple(clients), S, W))
        return to_record(self.sender.unflatten(mean)), None

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> None:
        self.sender.nodes.learn(replies)

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
        arrays = updates.vectors_to_arrays(_MIX, self.mixtures)
        for entry in self.history:
            arrays[f"{_SIM}{entry.server_round}/matrix"] = entry.similarity
            arrays[f"{_SIM}{entry.server_round}/clients"] = np.asarray(entry.clients, np.int64)
        return arrays

    def load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.mixtures = updates.vectors_from_arrays(_MIX, arrays)
        rounds = sorted({int(k.split("/")[1]) for k in arrays if k.startswith(_SIM)})
        self.history = []
        for r in rounds:
            S = np.asarray(arrays[f"{_SIM}{r}/matrix"])
            clients = tuple(int(c) for c in arrays[f"{_SIM}{r}/clients"])
            self.history.append(SimilarityRound(r, clients, S, mixing_weights(S, self.config.tau)))
