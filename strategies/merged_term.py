"""Server side of the frozen merged term of the exact aggregations, FLoRA and FedEx-LoRA.

FLoRA (https://arxiv.org/abs/2409.05976) merges s * sum_k p_k B_k A_k into the weight the next
round trains on; FedEx-LoRA (https://arxiv.org/abs/2410.09432) merges the residual
s * (sum_k p_k B_k A_k - B_bar A_bar). The base model may be 4-bit, so clients keep the merged
term apart as a frozen dense D per LoRA layer (``colora.adapter.FrozenDelta``), on disk.

Design (chosen for bytes): every client holds the same global D, so each round the server sends
only the round's increment as low-rank factors, B_inc (d_out x q) and A_inc (q x d_in) with
D += B_inc @ A_inc, and the client accumulates it. A node whose held round is not known to be
the previous one (new, failed last round, or after a server restart) gets the dense D instead.
``merge-round`` in a reply says which round's term the client holds; until it replies, the
server assumes nothing. D is kept unscaled; clients apply the scale s = alpha / r.

Speed (issue 13): folding the increment into D is a GEMM of Σ_layers d_out·d_in·q multiply-adds
(q = K·r: 8.5·10¹⁰ at K = 100 clients on the bundled adapter, seconds on this machine), while
aggregating is only stacking factors (O(K·D) copies). The fold therefore runs on a worker
thread, started when ``aggregate_train`` hands over the increment; numpy's GEMM releases the
GIL, so it overlaps what the server does next (the evaluate round: the clients' evaluation).
Whatever reads D (a 'replace' payload, the checkpoint's ``to_arrays``, ``total``) or starts
the next fold waits for it first, so D is always the same sequence of in-place additions,
whatever the timing: the bits never depend on the thread. Up-to-date nodes only need the
increment's factors, which the fold only reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flwr_strategy

from colora import contract as keys
from colora.wire import to_record
from strategies import messages
from strategies.base import Strategy
from strategies.maths.lora_products import Factors
from strategies.maths.reproducible import aligned_matmul
from strategies.ordering import by_client

_TOTAL, _ROUND = "merged/", "merged-round"


class MergedTerm:
    """The accumulated dense term D per LoRA layer, its latest increment and who holds what."""

    def __init__(self) -> None:
        self._total: dict[str, np.ndarray] = {}
        self._fold: Future | None = None  # the latest increment being added to _total
        self._worker: ThreadPoolExecutor | None = None  # started on the first fold
        self.increment: dict[str, Factors] = {}
        self.round = 0
        self.held: dict[int, int] = {}  # node id -> round of the term it reported holding
        self._records: dict[str, ArrayRecord] = {}

    @property
    def total(self) -> dict[str, np.ndarray]:
        """D per layer, every increment so far added (waits for a fold under way)."""
        self._settle()
        return self._total

    def _settle(self) -> None:
        """Wait for the fold under way, if any (and raise what it raised)."""
        fold, self._fold = self._fold, None
        if fold is not None:
            fold.result()

    def release_increment(self) -> None:
        """Drop last round's increment once this round's train messages are out (they were
        its last users), so its memory (K x the adapter) is free before the next one."""
        self._settle()  # the fold may still be reading it
        self.increment, self._records = {}, {}

    def add(self, server_round: int, increment: Mapping[str, Factors]) -> None:
        """D += B_inc @ A_inc per layer, on the worker thread; ``increment`` becomes what
        up-to-date nodes get."""
        self._settle()
        increment = dict(increment)
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="merged-term")
        self._fold = self._worker.submit(_fold_into, self._total, increment)
        self.increment, self.round, self._records = increment, server_round, {}

    def _record(self, mode: str) -> ArrayRecord:
        if mode not in self._records:  # built once per round, shared by every message
            if mode == "add":
                arrays = {
                    f"{layer}.{suffix}": value
                    for layer, (b, a) in self.increment.items()
                    for suffix, value in ((keys.MERGE_B, b), (keys.MERGE_A, a))
                }
            elif mode == "replace":
                arrays = {f"{layer}.{keys.MERGE_DENSE}": d for layer, d in self.total.items()}
            else:
                arrays = {}
            self._records[mode] = to_record(arrays)
        return self._records[mode]

    def payload(self, node_id: int, config: ConfigRecord) -> tuple[ConfigRecord, ArrayRecord]:
        """This node's config (with merge keys) and merge record; forgets what it held until
        it replies again, so a lost reply never leaves the server believing a stale round."""
        held = self.held.pop(node_id, None)
        if held == self.round:
            mode = "keep"
        elif held == self.round - 1 and self.increment:
            mode = "add"
        else:
            mode = "replace"
        node_config = ConfigRecord({**config, keys.MERGE_MODE: mode, keys.MERGE_ROUND: self.round})
        return node_config, self._record(mode)

    def address(self, sampled: Iterable[Message]) -> list[Message]:
        """Each sampled node's message with its own merge keys and merge record."""
        out = []
        for message in sampled:
            config, merge = self.payload(message.metadata.dst_node_id, message.content["config"])
            content = messages.node_content(message.content["arrays"], config, merge)
            out.append(messages.readdress(message, content))
        return out

    def learn(self, replies: Iterable[Message]) -> None:
        for reply in replies:
            if not reply.has_error() and keys.MERGE_ROUND in reply.content["metrics"]:
                held = int(reply.content["metrics"][keys.MERGE_ROUND])
                self.held[reply.metadata.src_node_id] = held

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {_TOTAL + layer: d for layer, d in self.total.items()}
        arrays[_ROUND] = np.asarray(self.round, dtype=np.int64)
        return arrays

    def load(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._settle()
        self._total = {  # writable float32 copies: add() accumulates in place
            k.removeprefix(_TOTAL): np.array(v, dtype=np.float32)
            for k, v in arrays.items()
            if k.startswith(_TOTAL)
        }
        self.round = int(arrays.get(_ROUND, 0))
        self.increment, self.held, self._records = {}, {}, {}

    def log(self) -> dict:
        ranks = [b.shape[1] for b, _ in self.increment.values()]
        return {"merged_round": self.round, "merged_increment_rank": max(ranks, default=0)}


def _fold_into(total: dict[str, np.ndarray], increment: Mapping[str, Factors]) -> None:
    """total[layer] += B @ A for every layer of ``increment`` (a new entry where absent)."""
    for layer, (b, a) in increment.items():
        # d_out x q @ q x d_in: a GEMM on aligned operands, so its bits do not depend on
        # where the factors happen to sit in memory (maths.reproducible).
        update = aligned_matmul(b, a, np.result_type(b, a))
        if layer in total:
            total[layer] += update
        else:
            total[layer] = update


class MergesTerm(Strategy, flwr_strategy.FedAvg):
    """A strategy that aggregates exactly by growing the frozen merged term (FLoRA, FedEx-LoRA).

    Every message carries the node's merge keys and record (:meth:`MergedTerm.address`); each
    round the subclass's :meth:`merge` gives the new global arrays and the low-rank increment
    of D. The term is the strategy's state and its log.
    """

    def __init__(self, config: Any, **common: Any) -> None:
        super().__init__(config, **common)
        self.term = MergedTerm()

    def train_arrays(self, arrays: ArrayRecord, config: ConfigRecord) -> ArrayRecord:
        """What the train messages carry; may add config keys."""
        del config
        return arrays

    def evaluate_arrays(self, arrays: ArrayRecord, config: ConfigRecord) -> ArrayRecord:
        """What the evaluate messages carry; may add config keys."""
        del config
        return arrays

    def merge(
        self, server_round: int, replies: Sequence[Message]
    ) -> tuple[ArrayRecord | None, Mapping[str, Factors]]:
        """(the next global arrays, the increment B_inc @ A_inc of D per layer)."""
        raise NotImplementedError

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        sent = self.train_arrays(arrays, config)
        return self.term.address(super().configure_train(server_round, sent, config, grid))

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        sent = self.evaluate_arrays(arrays, config)
        return self.term.address(super().configure_evaluate(server_round, sent, config, grid))

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = by_client(replies)
        self.term.learn(replies)
        self.term.release_increment()
        arrays, increment = self.merge(server_round, replies)
        self.term.add(server_round, increment)
        return arrays, None

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> None:
        self.term.learn(replies)

    def state_arrays(self) -> dict[str, np.ndarray]:
        return self.term.to_arrays()

    def load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.term.load(arrays)

    def round_log(self, server_round: int) -> dict:
        return self.term.log()
