"""A catalogue of broken or hostile client replies: each one must be rejected, never raise.

Every entry takes the message the server sent and returns the reply a buggy or malicious
client could send. Values that Flower's own record types refuse (bools, strings, NaN in a
list) are forced past them, as a client speaking the wire protocol directly could.
"""

from __future__ import annotations

import io
import math

import numpy as np
from flwr.app import Array, ConfigRecord, Message, MetricRecord, RecordDict

from colora import contract as names
from colora.wire import to_record
from tests.server.federation_fakes import TASKS, honest_arrays, train_metrics

NPY_STYPE = names.NPY_STYPE


def forced_metrics(values: dict) -> MetricRecord:
    """A MetricRecord holding ``values`` without Flower's type checks."""
    record = MetricRecord()
    record.__dict__["_data"].update(values)
    return record


def npy_array(data: bytes, dtype: str = "float32", shape=(1,), stype: str = NPY_STYPE) -> Array:
    array = Array(dtype=dtype, shape=(1,), stype=stype, data=data)
    array.shape = shape if isinstance(shape, int) else tuple(shape)  # Flower checks no further
    return array


def reply_with(message: Message, *, metrics=None, arrays=None, drop=()) -> Message:
    """The honest train reply with ``metrics`` entries and ``arrays`` entries replaced
    (a value of None deletes the key) and the records in ``drop`` removed."""
    node = message.metadata.dst_node_id
    values = {**train_metrics(node), **(metrics or {})}
    values = {k: v for k, v in values.items() if v is not None}
    record = to_record(honest_arrays(message))
    for key, array in (arrays or {}).items():  # past Flower's checks, as on the wire
        record.__dict__["_data"].pop(key, None)
        if array is not None:
            record.__dict__["_data"][key] = array
    content = {"arrays": record, "metrics": forced_metrics(values)}
    for name in drop:
        content.pop(name)
    return Message(RecordDict(content), reply_to=message)


def first_key(message: Message) -> str:
    keys = sorted(message.content["arrays"])
    return keys[0] if keys else "extra.weight"


def with_array(message: Message, array: Array) -> Message:
    return reply_with(message, arrays={first_key(message): array})


def npy_bytes(value: np.ndarray, *, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, value, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _spoiled(message: Message, spoil) -> Message:
    """The first array of the honest reply, with ``spoil(np.ndarray) -> np.ndarray``."""
    key = first_key(message)
    state = honest_arrays(message)
    value = spoil(state[key]) if key in state else np.full((2,), np.nan, np.float32)
    return with_array(message, Array(np.ascontiguousarray(value)))


def _nan(value):
    out = value.copy()
    out.flat[0] = np.nan
    return out


def _truncated(message):
    key = first_key(message)
    good = honest_arrays(message).get(key, np.zeros(3, np.float32))
    data = npy_bytes(good)
    return with_array(message, npy_array(data[:-3], shape=good.shape))


def _object_dtype(message):
    data = npy_bytes(np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return with_array(message, npy_array(data, dtype="object", shape=(2,)))


def _header_disagrees(message):
    key = first_key(message)
    good = honest_arrays(message).get(key, np.zeros(3, np.float32))
    return with_array(message, npy_array(npy_bytes(good), shape=(*good.shape, 1)))


# Train replies: name -> reply maker. Names say what is wrong.
def _invented(message: Message) -> dict:
    """The honest reply's per-task counts moved to a task the run does not have (they still
    sum to num-examples, so only the task's name is wrong)."""
    honest = train_metrics(message.metadata.dst_node_id)
    counts = {k: v for k, v in honest.items() if k.startswith(names.TASK_EXAMPLES)}
    return {**dict.fromkeys(counts), names.TASK_EXAMPLES + "x": sum(counts.values())}


TRAIN: dict = {
    "metrics without client-id": lambda m: reply_with(m, metrics={names.CLIENT_ID: None}),
    "num-examples = inf": lambda m: reply_with(m, metrics={names.NUM_EXAMPLES: math.inf}),
    "num-examples = nan": lambda m: reply_with(m, metrics={names.NUM_EXAMPLES: math.nan}),
    "num-examples = 0": lambda m: reply_with(m, metrics={names.NUM_EXAMPLES: 0}),
    "num-examples < 0": lambda m: reply_with(m, metrics={names.NUM_EXAMPLES: -5}),
    "num-examples missing": lambda m: reply_with(m, metrics={names.NUM_EXAMPLES: None}),
    "num-examples = 1e15": lambda m: reply_with(
        m,
        metrics={
            names.NUM_EXAMPLES: 1e15,
            names.TASK_EXAMPLES + TASKS[m.metadata.dst_node_id]: 1e15,
        },
    ),
    "per-task counts do not sum": lambda m: reply_with(
        m, metrics={names.TASK_EXAMPLES + "translation-x": 1e15}
    ),
    "num-examples as a string": lambda m: reply_with(m, metrics={names.NUM_EXAMPLES: "10"}),
    "num-examples as a bool": lambda m: reply_with(m, metrics={names.NUM_EXAMPLES: True}),
    "client-id as a float": lambda m: reply_with(m, metrics={names.CLIENT_ID: 1.5}),
    "client-id negative": lambda m: reply_with(m, metrics={names.CLIENT_ID: -1}),
    "client-id huge": lambda m: reply_with(m, metrics={names.CLIENT_ID: 2**62}),
    "per-task loss is a list": lambda m: reply_with(
        m, metrics={names.TRAIN_LOSS_TASK + "generation": [1.0, 2.0]}
    ),
    "per-task loss is nan": lambda m: reply_with(
        m, metrics={names.TRAIN_LOSS_TASK + "generation": math.nan}
    ),
    "train loss negative": lambda m: reply_with(m, metrics={names.TRAIN_LOSS: -1.0}),
    "unknown metric is a list": lambda m: reply_with(m, metrics={"whatever": [math.nan]}),
    "train loss of a task the run does not have": lambda m: reply_with(
        m, metrics={names.TRAIN_LOSS_TASK + "invented": 0.5}
    ),
    "examples of a task the run does not have": lambda m: reply_with(m, metrics=_invented(m)),
    f"{names.MAX_METRICS + 1} metrics": lambda m: reply_with(
        m, metrics={f"unknown-{i}": 1.0 for i in range(names.MAX_METRICS + 1)}
    ),
    "no metrics record": lambda m: reply_with(m, drop=("metrics",)),
    "no arrays record": lambda m: reply_with(m, drop=("arrays",)),
    "metrics in a ConfigRecord": lambda m: Message(
        RecordDict(
            {
                "arrays": to_record(honest_arrays(m)),
                "metrics": ConfigRecord({names.CLIENT_ID: 0, names.NUM_EXAMPLES: "1e15"}),
            }
        ),
        reply_to=m,
    ),
    "garbage array bytes": lambda m: with_array(m, npy_array(b"\x00garbage" * 7)),
    "empty array bytes": lambda m: with_array(m, npy_array(b"")),
    "truncated .npy": _truncated,
    "object-dtype .npy": _object_dtype,
    "unexpected stype": lambda m: with_array(m, npy_array(b"\x00" * 4, stype="torch.Tensor")),
    ".npy header disagrees with the Array": _header_disagrees,
    ".npy version 2": lambda m: with_array(
        m, npy_array(b"\x93NUMPY\x02\x00" + npy_bytes(np.zeros(1, np.float32))[8:])
    ),
    "no such dtype ('<f3')": lambda m: with_array(
        m, npy_array(npy_bytes(np.zeros(2, np.float32)).replace(b"<f4", b"<f3"), shape=(2,))
    ),
    "header shape overflows": lambda m: with_array(
        m,
        npy_array(
            npy_bytes(np.zeros(2, np.float32)).replace(
                b"(2,), }" + b" " * 10,
                b"(9999999999,), } ",  # same header length
            ),
            shape=(9999999999,),
        ),
    ),
    "Array.shape is not a list": lambda m: with_array(
        m, npy_array(npy_bytes(np.zeros(2)), shape=7)
    ),
    "structured dtype": lambda m: with_array(
        m, npy_array(npy_bytes(np.zeros(2, dtype=[("a", "<f4")])), dtype="[('a', '<f4')]")
    ),
    "NaN in an array": lambda m: _spoiled(m, _nan),
    "Inf in an array": lambda m: _spoiled(m, lambda v: v * np.float32(np.inf)),
    "float64 array": lambda m: _spoiled(m, lambda v: v.astype(np.float64)),
    "wrong shape": lambda m: _spoiled(m, lambda v: v.reshape(-1)[:1].copy()),
    "big-endian dtype": lambda m: _spoiled(m, lambda v: v.astype(">f4")),
    "missing array key": lambda m: reply_with(m, arrays={first_key(m): None}),
    "unexpected 4 MB key": lambda m: reply_with(
        m, arrays={"smuggled.weight": Array(np.zeros((1024, 1024), np.float32))}
    ),
}


def eval_reply(message: Message, metrics=None, *, drop_metrics: bool = False) -> Message:
    node = message.metadata.dst_node_id
    values = {
        names.CLIENT_ID: node - 1,
        names.NUM_EXAMPLES: 4,
        names.EVAL_LOSS_TASK + TASKS[node]: 2.0 / node,
        **(metrics or {}),
    }
    values = {k: v for k, v in values.items() if v is not None}
    content = RecordDict({} if drop_metrics else {"metrics": forced_metrics(values)})
    return Message(content, reply_to=message)


EVAL: dict = {
    "evaluate reply without metrics": lambda m: eval_reply(m, drop_metrics=True),
    "NaN eval loss": lambda m: eval_reply(
        m, {names.EVAL_LOSS_TASK + TASKS[m.metadata.dst_node_id]: math.nan}
    ),
    "NaN eval example count": lambda m: eval_reply(m, {names.NUM_EXAMPLES: math.nan}),
    "inf eval example count": lambda m: eval_reply(m, {names.NUM_EXAMPLES: math.inf}),
    "eval without client-id": lambda m: eval_reply(m, {names.CLIENT_ID: None}),
    "eval loss is a list": lambda m: eval_reply(m, {names.EVAL_LOSS_TASK + "generation": [1.0]}),
    "eval loss negative": lambda m: eval_reply(m, {names.EVAL_LOSS_TASK + "generation": -3.0}),
    "eval losses on 0 examples": lambda m: eval_reply(m, {names.NUM_EXAMPLES: 0}),
    "eval loss of a task the run does not have": lambda m: eval_reply(
        m, {names.EVAL_LOSS_TASK + "invented": 1.0}
    ),
    # the bound on an evaluate count is per task: 100 invented tasks would raise it 100-fold
    "eval count inflated by invented tasks": lambda m: eval_reply(
        m, {names.NUM_EXAMPLES: 1600, **{f"{names.EVAL_LOSS_TASK}t{i}": 1.0 for i in range(100)}}
    ),
    "generation metric of a task the run does not have": lambda m: eval_reply(
        m, {names.EVAL_METRIC + "invented.pass@1": 50.0}
    ),
    f"{names.MAX_METRICS + 1} eval metrics": lambda m: eval_reply(
        m, {f"unknown-{i}": 1.0 for i in range(names.MAX_METRICS + 1)}
    ),
}
