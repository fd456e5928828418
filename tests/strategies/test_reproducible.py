"""Issue 10: the same accepted replies give bit-identical results in any order and memory layout.

Every registered strategy runs the same three rounds 20 times from a fresh instance. Each run
gets the same reply contents, but as fresh copies, with every tensor's payload starting at a
different byte offset inside its buffer (4, 8, 12, ... bytes past a 64-byte boundary, so the
arrays the strategy reads are misaligned views), and in a shuffled order. The aggregates, the
strategy state, the round logs and every per-node message of the next round must be equal bit
for bit (bytes compared, so -0.0 against 0.0 or two NaN payloads would fail too).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from colora.wire import to_numpy, to_record
from strategies.registry import STRATEGIES
from tests.strategies.fakes import FakeGrid, lora_state, strategy

NODES = (11, 12, 13, 14, 15, 16)
TASKS = ("generation", "translation", "summarization")
RUNS = 20


def offset_array(value: np.ndarray, offset: int) -> Array:
    """``value`` as a Flower Array whose .npy data starts ``offset`` bytes past a multiple of
    64 in the payload (np.save pads the header to 64; extra header spaces shift the data)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(value), allow_pickle=False)
    data = buffer.getvalue()
    length = int.from_bytes(data[8:10], "little")
    header = data[10 : 10 + length]
    header = header[:-1] + b" " * (offset % 64) + b"\n"
    payload = data[:8] + len(header).to_bytes(2, "little") + header + data[10 + length :]
    return Array(dtype=str(value.dtype), shape=value.shape, stype="numpy.ndarray", data=payload)


def offset_record(state: dict[str, np.ndarray], offset: int) -> ArrayRecord:
    return ArrayRecord({key: offset_array(value, offset) for key, value in state.items()})


def _client(node: int) -> int:
    return node - NODES[0]


def _train_metrics(node: int, server_round: int, sent: Message) -> dict:
    task = TASKS[node % len(TASKS)]
    n = 5 + node % 4
    metrics = {"client-id": _client(node), "num-examples": n, f"num-examples.{task}": n}
    if "merge-round" in sent.content["config"]:
        metrics["merge-round"] = sent.content["config"]["merge-round"]
    return metrics


def _trained(sent: Message, server_round: int) -> dict[str, np.ndarray]:
    """What node would send back: the arrays it got plus a fixed update of its task."""
    node = sent.metadata.dst_node_id
    task_rng = np.random.default_rng([node % len(TASKS), server_round])
    own_rng = np.random.default_rng([node, server_round])
    out = {}
    for key, value in sorted(to_numpy(sent.content["arrays"]).items()):
        step = task_rng.normal(size=value.shape) + 0.3 * own_rng.normal(size=value.shape)
        out[key] = (value + 0.1 * step).astype(value.dtype)
    return out


def _replies(sent: list[Message], server_round: int, run: int, evaluate: bool) -> list[Message]:
    offset = 4 * run
    replies = []
    for message in sent:
        node = message.metadata.dst_node_id
        if evaluate:
            task = TASKS[node % len(TASKS)]
            metrics = {"client-id": _client(node), "num-examples": 5 + node % 4}
            metrics[f"eval-loss.{task}"] = 1.0 / (server_round + node % 3)
            content = RecordDict({"metrics": MetricRecord(metrics)})
        else:
            arrays = offset_record(_trained(message, server_round), offset)
            metrics = MetricRecord(_train_metrics(node, server_round, message))
            content = RecordDict({"arrays": arrays, "metrics": metrics})
        replies.append(Message(content=content, reply_to=message))
    if run:  # run 0 keeps the sent order; the others shuffle
        np.random.default_rng(run).shuffle(replies)
    return replies


def _messages_view(sent: list[Message]) -> list:
    """Per-node content of sent messages, sorted by node: config and every array record."""
    out = []
    for message in sorted(sent, key=lambda m: m.metadata.dst_node_id):
        content = message.content
        records = {name: _bits(to_numpy(rec)) for name, rec in content.array_records.items()}
        config = {k: str(v) for k, v in content["config"].items()} if "config" in content else {}
        out.append((message.metadata.dst_node_id, config, records))
    return out


def _bits(arrays) -> dict:
    return {
        key: (str(np.asarray(v).dtype), np.shape(v), np.asarray(v).tobytes())
        for key, v in sorted(dict(arrays).items())
    }


def _run(name: str, run: int) -> list:
    """Three rounds of train + evaluate; returns everything the strategy produced."""
    strat = strategy(name, **{"min-train-nodes": 2})
    arrays = to_record(lora_state(np.random.default_rng(7)))
    grid, seen = FakeGrid(NODES), []
    for server_round in (1, 2, 3):
        sent = list(strat.configure_train(server_round, arrays, ConfigRecord(), grid))
        seen.append(_messages_view(sent))
        new, _ = strat.aggregate_train(server_round, _replies(sent, server_round, run, False))
        arrays = new if new is not None else arrays
        seen.append(_bits(to_numpy(arrays)))
        sent = list(strat.configure_evaluate(server_round, arrays, ConfigRecord(), grid))
        seen.append(_messages_view(sent))
        strat.aggregate_evaluate(server_round, _replies(sent, server_round, run, True))
        seen.append(_bits(strat.state_arrays()))
        seen.append(json.dumps(strat.round_log(server_round), sort_keys=True))
    return seen


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_same_replies_in_any_order_and_layout_give_identical_bits(name):
    reference = _run(name, 0)
    for run in range(1, RUNS):
        result = _run(name, run)
        for step, (got, want) in enumerate(zip(result, reference, strict=True)):
            assert got == want, f"{name}: run {run} (offset {4 * run} B) differs at step {step}"


def test_offset_records_are_read_as_misaligned_views():
    """The layouts above really reach the strategy: the viewed data starts at the offset."""
    from strategies.messages import array_view

    value = np.arange(12, dtype=np.float32).reshape(3, 4)
    starts = set()
    for run in range(16):
        array = offset_array(value, 4 * run)
        view = array_view(array)
        np.testing.assert_array_equal(view, value)
        assert not view.flags.owndata  # a view into the payload, not a parsed copy
        start = len(array.data) - value.nbytes
        assert start % 64 == (4 * run) % 64
        starts.add(start % 64)
    assert len(starts) == 16


def test_similarity_weighted_gathered_mixtures_are_reproducible(monkeypatch):
    """Issue 13: above 16 (m + 1) clients the top-m mixtures are gathered block products;
    forced here at 6 clients with m = 2 (3 of 6 columns kept per row)."""
    from strategies.maths import mixture

    monkeypatch.setattr(mixture, "DENSE_PER_PEER", 0)
    monkeypatch.setattr(mixture, "COLUMNS", 40)  # several blocks and a narrower last one
    build = strategy
    monkeypatch.setattr(
        "tests.strategies.test_reproducible.strategy",
        lambda name, **params: build(name, **params, **{"top-peers": 2}),
    )
    reference = _run("similarity-weighted", 0)
    for run in range(1, RUNS):
        assert _run("similarity-weighted", run) == reference, f"run {run} differs"
