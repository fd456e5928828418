"""CoBa-balanced aggregation: convergence-balanced task weights across clients.

CoBa (Gong et al. 2024, https://arxiv.org/abs/2410.06741) balances multi-task fine-tuning by
the slopes of each task's validation loss: tasks that converge slowly gain weight (RCS), a task
that starts to diverge loses weight (ACS), and the divergence factor DF blends the two
(``strategies.maths.coba``; docs/ALGORITHMS.md, "CoBa-balanced"). Applied across clients: every
evaluate round records the example-weighted validation loss per task (``eval-loss.<task>``
from the clients), and the next aggregation weights client k by sum_t omega_t n_{k,t}, its
examples per task weighted by the task's omega. Weights are uniform during the warm-up.

A task no client reported in some round repeats its last loss there; a task first reported after
the first evaluate round has no start point, so it is left out of the CoBa computation and gets
the mean omega. The histories are strategy state, so they
survive a server restart. Heterogeneous ranks are zero-padded as in ``fedavg``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp import strategy as flwr_strategy

from colora.contract import EVAL_LOSS_TASK, TASK_EXAMPLES, task_means
from colora.wire import to_record
from runconfig.fields import option, require
from strategies import messages
from strategies.base import Strategy, in_the_clear
from strategies.maths.averaging import weighted_average
from strategies.maths.coba import client_weights, coba_terms
from strategies.ordering import by_client

_HISTORY = "coba-history/"  # state key per task: its validation-loss history

IN_THE_CLEAR = in_the_clear("coba weights each client's update by its tasks' loss slopes")


@dataclass(frozen=True)
class CobaConfig:
    warmup_rounds: int = option(1, "Rounds of uniform task weights before CoBa starts.")
    coba_window: int = option(3, "CoBa: points in the least-squares slope window W.")
    coba_floor: float = option(0.1, "CoBa: weights are floored at this / number of tasks.")
    client_ranks: str = option("", messages.RANKS_HELP)

    def __post_init__(self) -> None:
        require(
            self.warmup_rounds >= 0, "strategy", "warmup_rounds", self.warmup_rounds, "must be >= 0"
        )
        require(self.coba_window >= 2, "strategy", "coba_window", self.coba_window, "must be >= 2")
        require(
            0 <= self.coba_floor <= 1,
            "strategy",
            "coba_floor",
            self.coba_floor,
            "must be in [0, 1]",
        )
        messages.parse_ranks("client_ranks", self.client_ranks)


def task_counts(reply: Message) -> dict[str, float]:
    """Examples per task of a screened reply (``server.screening`` may have capped them)."""
    metrics = reply.content["metrics"]
    return {
        k.removeprefix(TASK_EXAMPLES): float(v)
        for k, v in metrics.items()
        if k.startswith(TASK_EXAMPLES)
    }


class Coba(
    Strategy,
    messages.AnnouncesRanks,
    flwr_strategy.FedAvg,
    name="coba",
    individual_updates=IN_THE_CLEAR,
):
    """FedAvg with client weights from CoBa task weights and examples per task."""

    def __init__(self, config: CobaConfig, **common) -> None:
        super().__init__(config, **common)
        self.history: dict[str, list[float]] = {}  # task -> validation loss per evaluate round
        self.rounds_seen = 0
        self.last_log: dict = {}

    def task_weights(self, tasks: Iterable[str]) -> dict[str, float]:
        """omega per task, normalised over ``tasks``; a task without a complete history gets
        the mean omega of those with one (uniform when none has)."""
        complete = {t: h for t, h in self.history.items() if len(h) == self.rounds_seen}
        weights: dict[str, float] = {}
        if complete:
            terms = coba_terms(
                complete,
                window=self.config.coba_window,
                warmup=self.config.warmup_rounds,
                floor_factor=self.config.coba_floor,
            )
            weights = {t: float(w) for t, w in zip(terms.tasks, terms.weights, strict=True)}
            self.last_log = {
                "coba_in_warmup": terms.in_warmup,
                "coba_df": None if terms.df is None else float(terms.df),
            }
        fill = float(np.mean(list(weights.values()))) if weights else 1.0
        omega = {t: weights.get(t, fill) for t in sorted(tasks)}
        total = sum(omega.values())
        return {t: w / total for t, w in omega.items()}

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = by_client(replies)
        counts = [task_counts(r) for r in replies]
        omega = self.task_weights({t for c in counts for t in c})
        p = client_weights(counts, omega)
        states = messages.padded(messages.states(replies), self.rank)
        ids = [str(messages.client_id(r)) for r in replies]
        self.last_log = {
            **self.last_log,
            "coba_task_weights": omega,
            "coba_client_weights": dict(zip(ids, p.round(6).tolist(), strict=True)),
        }
        return to_record(weighted_average(states, p)), None

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> None:
        """Append this round's example-weighted validation loss of every task."""
        # Float sums in a fixed order (by client): reproducible bits. Weighted by num-examples,
        # which screening caps for evaluate replies; a per-task count there is not screened.
        entries = [reply.content["metrics"] for reply in by_client(replies)]
        means = task_means(entries, EVAL_LOSS_TASK, task_counts=False)
        self.rounds_seen += 1
        for task, mean in means.items():
            self.history.setdefault(task, []).append(mean)
        for task, losses in self.history.items():
            if task not in means:
                losses.append(losses[-1])  # a missing point repeats the last loss

    def round_log(self, server_round: int) -> dict:
        log, self.last_log = self.last_log, {}
        return {
            **log,
            "coba_history": {t: [round(v, 6) for v in h] for t, h in sorted(self.history.items())},
        }

    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {_HISTORY + t: np.asarray(h, np.float64) for t, h in self.history.items()}
        arrays["coba-rounds"] = np.asarray(self.rounds_seen, np.int64)
        return arrays

    def load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.history = {
            k.removeprefix(_HISTORY): [float(v) for v in a]
            for k, a in arrays.items()
            if k.startswith(_HISTORY)
        }
        self.rounds_seen = int(arrays.get("coba-rounds", 0))
