"""Flower-message plumbing the strategies share: reading replies, per-node messages, ranks.

Strategies keep Flower's sampling (``configure_train`` of the parent class) and, where they
personalise, re-address each sampled node's message with its own content. Replies are already
screened by ``server.screening`` into the canonical form of ``colora.contract`` (metrics
validated, example counts capped), so nothing here re-validates them.

Heterogeneous ranks follow HetLoRA (https://arxiv.org/abs/2401.06432): with ``client-ranks``,
client c trains the first r_c ranks and replies with r_c-rank factors; the averaging strategies
zero-pad every reply back to the full rank r before averaging (``colora.keys.zero_pad_rank``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from colora import contract as keys
from colora.contract import CLIENT_ID, NUM_EXAMPLES, decode_array
from colora.keys import lora_rank, split_lora_key, zero_pad_rank
from colora.wire import to_record
from runconfig.fields import require
from strategies.maths.averaging import weighted_average

State = dict[str, np.ndarray]
RANKS_HELP = (
    "Comma-separated LoRA ranks; client-id c trains rank ranks[c % n] (HetLoRA "
    "zero-padding); '' = every client uses adapter.rank."
)


def parse_ranks(name: str, text: str) -> tuple[int, ...]:
    """``"8,4"`` -> (8, 4); raises ConfigError naming ``strategy.<name>``."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    require(
        all(p.isdigit() and int(p) >= 1 for p in parts),
        "strategy",
        name,
        text,
        "must be comma-separated integers >= 1",
    )
    return tuple(int(p) for p in parts)


def announce_ranks(ranks: str, arrays: ArrayRecord, config: ConfigRecord) -> int | None:
    """Put ``client-ranks`` into ``config``; returns the full rank to pad replies to, or None
    when every client trains the full rank."""
    if not ranks:
        return None
    config[keys.CLIENT_RANKS] = ranks
    return record_rank(arrays)


class AnnouncesRanks:
    """Mixed in before a Flower strategy class: ``configure_train``/``configure_evaluate`` put
    ``strategy.client-ranks`` into the config (HetLoRA) and remember the full rank that
    replies are zero-padded to (``self.rank``; None when every client trains the full rank).
    The strategy's config dataclass has a ``client_ranks`` field."""

    rank: int | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid
    ) -> Iterable[Message]:
        self.rank = announce_ranks(self.config.client_ranks, arrays, config)
        return super().configure_train(server_round, arrays, config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid
    ) -> Iterable[Message]:
        announce_ranks(self.config.client_ranks, arrays, config)
        return super().configure_evaluate(server_round, arrays, config, grid)


def client_id(reply: Message) -> int:
    return int(reply.content["metrics"][CLIENT_ID])


def array_view(array: Array) -> np.ndarray:
    """A read-only view of ``array``'s payload (``contract.decode_array``: no ``np.load``,
    never pickle); raises ``contract.ReplyError`` on anything but a plain numeric .npy."""
    return decode_array(array)


def arrays_of(record: ArrayRecord) -> State:
    """``colora.wire.to_numpy`` without the per-tensor ``np.load`` (read-only views)."""
    return {key: array_view(array) for key, array in record.items()}


def states(replies: Sequence[Message]) -> list[State]:
    return [arrays_of(reply.content["arrays"]) for reply in replies]


def example_counts(replies: Sequence[Message]) -> list[float]:
    return [float(reply.content["metrics"][NUM_EXAMPLES]) for reply in replies]


def record_rank(arrays: ArrayRecord) -> int:
    """The LoRA rank of ``arrays``, read from the array shapes without deserialising them."""
    return lora_rank({key: np.empty(array.shape, dtype=np.bool_) for key, array in arrays.items()})


def padded(states_: Sequence[State], rank: int | None) -> list[State]:
    """HetLoRA: zero-pad replies of a smaller rank up to ``rank`` (None: leave as they are)."""
    if rank is None:
        return list(states_)
    return [s if not s or lora_rank(s) == rank else zero_pad_rank(s, rank) for s in states_]


def average(replies: Sequence[Message], rank: int | None = None) -> State:
    """FedAvg of the replies' arrays weighted by ``num-examples``, zero-padded to ``rank``."""
    return weighted_average(padded(states(replies), rank), example_counts(replies))


def select_factors(arrays: ArrayRecord, factors: Iterable[str]) -> ArrayRecord:
    """The LoRA factors ``"A"`` and/or ``"B"`` of ``arrays`` (what FFA/FedSA-LoRA send)."""
    wanted = set(factors)
    return ArrayRecord(
        {k: a for k, a in arrays.items() if (split_lora_key(k) or ("", ""))[1] in wanted}
    )


def readdress(message: Message, content: RecordDict) -> Message:
    """A message to the same node and of the same type as ``message``, with ``content``."""
    return Message(
        content=content,
        dst_node_id=message.metadata.dst_node_id,
        message_type=message.metadata.message_type,
    )


def node_content(
    arrays: ArrayRecord | Mapping[str, np.ndarray],
    config: ConfigRecord,
    merge: ArrayRecord | None = None,
) -> RecordDict:
    record = arrays if isinstance(arrays, ArrayRecord) else to_record(arrays)
    content = {"arrays": record, "config": config}
    if merge is not None:
        content[keys.MERGE_RECORD] = merge
    return RecordDict(content)


IDENTIFY = "query.identify"  # asks a node which client it hosts (client_app.identify)


def identify_messages(nodes: Iterable[int]) -> list[Message]:
    """One query per node asking for its ``client-id``; no arrays travel."""
    content = {"config": ConfigRecord()}
    return [Message(RecordDict(content), dst_node_id=n, message_type=IDENTIFY) for n in nodes]


def valid_client_id(reply: Message) -> int | None:
    """The reply's ``client-id`` if it is an integer in [0, MAX_CLIENT_ID], else None."""
    if reply.has_error() or "metrics" not in reply.content.metric_records:
        return None
    value = reply.content["metrics"].get(CLIENT_ID)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= keys.MAX_CLIENT_ID else None


class NodeClients:
    """Flower node id -> stable client id, learnt from the ``client-id`` metric of replies.

    Node ids are what messages are addressed to, but they change when a SuperNode restarts;
    per-client state (clusters, mixtures) is therefore keyed by client id.
    """

    def __init__(self) -> None:
        self._by_node: dict[int, int] = {}

    def learn(self, replies: Iterable[Message]) -> None:
        for reply in replies:
            if not reply.has_error() and CLIENT_ID in reply.content["metrics"]:
                self._by_node[reply.metadata.src_node_id] = client_id(reply)

    def learn_identities(self, replies: Iterable[Message], asked: Iterable[int]) -> int:
        """Learn from answers to :func:`identify_messages` sent to ``asked``; a reply that is
        an error, from a node not asked, or without a valid id is ignored. Returns how many
        nodes were learnt."""
        learnt, asked = 0, set(asked)
        for reply in replies:
            client = valid_client_id(reply)
            if client is not None and reply.metadata.src_node_id in asked:
                self._by_node[reply.metadata.src_node_id] = client
                learnt += 1
        return learnt

    def clients(self) -> set[int]:
        return set(self._by_node.values())

    def get(self, node_id: int) -> int | None:
        return self._by_node.get(node_id)
