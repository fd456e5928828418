"""The canonical order of a round's replies: by client id, then by node id.

Floating-point sums depend on their order, and replies arrive in any order (Flower samples
nodes at random, and they answer when they finish). Every ``aggregate_train`` sorts its replies
with ``by_client`` first, so the same accepted replies give bit-identical aggregates in any
arrival order (issue 10). ``server.federation`` sorts with the same key before calling the
strategy, which keeps a re-run round after a resume identical too.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Message

from colora.contract import CLIENT_ID


def client_order(reply: Message) -> tuple[float, int]:
    """Sort key: the reply's ``client-id`` metric (-1 when absent), then its source node id."""
    metrics = reply.content.get("metrics", {})
    return float(metrics.get(CLIENT_ID, -1)), reply.metadata.src_node_id


def by_client(replies: Iterable[Message]) -> list[Message]:
    """``replies`` in the canonical order (a new list)."""
    return sorted(replies, key=client_order)
