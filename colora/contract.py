"""The typed contract between a fedcolora client and the server: config keys, metric names, replies.

A client's train reply carries ``arrays`` (its shared adapter, one Flower ``Array`` per key)
and ``metrics``; an evaluate reply carries ``metrics`` only. This module spells every metric
name once and parses a reply into a frozen :class:`TrainReply` or :class:`EvalReply`. Parsing
validates every field (type, finite, in range, required) and decodes every array without
``np.load`` and without ever allowing pickle; any violation raises :class:`ReplyError` with a
one-line reason, so the server rejects that reply and the round goes on.

The .npy format is NumPy's NEP 1 (https://numpy.org/neps/nep-0001-npy-format.html); Flower's
``Array`` serialises with ``np.save(..., allow_pickle=False)``, i.e. a v1.0 header for a
C- or Fortran-ordered array. Anything else (another version, an object or structured dtype,
a truncated payload, another ``stype``) is refused, not handed to a more permissive parser.

**Server -> client**: keys of the train/evaluate ``ConfigRecord`` tell a client how to
assemble its shared adapter and what to send back. The reply's ``arrays`` always carries
exactly the keys the server sent (new values; fewer ranks with ``client-ranks``), so screening
can check a reply against what was sent. Absent keys mean plain FedAvg/CoLoRA behaviour.
``client-id`` and ``merge-round`` double as config keys.

This is a leaf module: it imports only NumPy and Flower. It lives in ``colora``, below both the
strategies and the client, so either side and the server can depend on it (issue 15).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message

# Metric names, client -> server. A name ending in "." is a prefix followed by a task name.
CLIENT_ID = "client-id"  # the stable id behind a Flower node id (required)
NUM_EXAMPLES = "num-examples"  # examples behind the reply: the aggregation weight (required)
TASK_EXAMPLES = "num-examples."  # + task: training examples of that task
TRAIN_LOSS = "train-loss"  # mean training loss of the round
TRAIN_LOSS_TASK = "train-loss."  # + task
TRAIN_LOSS_FIRST = "train-loss-first"
TRAIN_LOSS_LAST = "train-loss-last"
TRAIN_SECONDS = "train-seconds"
TRAIN_STEPS = "train-steps"
TRAIN_ON_GPU = "train-on-gpu"  # 1 when the client trained on CUDA
PERSONAL_LOADED_ROUND = "personal-loaded-round"
SHARED_IN_FINGERPRINT = "shared-in-fingerprint"
MERGE_ROUND = "merge-round"  # the server round a client's frozen merged term is complete through
EVAL_LOSS = "eval-loss"  # mean validation loss over the client's tasks
EVAL_LOSS_TASK = "eval-loss."  # + task
EVAL_METRIC = "eval."  # + "<task>.<metric>": generation metrics (pass@1, quality.* counts)
EVAL_SECONDS = "eval-seconds."  # + task
DP_EPSILON, DP_DELTA = "dp-epsilon", "dp-delta"  # local DP spent this round
DP_EPSILON_SPENT, DP_DELTA_SPENT = "dp-epsilon-spent", "dp-delta-spent"  # ... in total
DP_NOISE_STD = "dp-noise-std"

# ConfigRecord keys, server -> client. Values are strings of comma-separated items or numbers.
TRAIN_FACTORS = "train-factors"  # "A,B" (default) or "B" (FFA-LoRA: A stays frozen)
PRIVATE_FACTORS = "private-factors"  # factors kept on the client's disk: "B" (FedSA), "A,B"
CLIENT_RANKS = "client-ranks"  # "8,4,2": client-id c trains rank ranks[c % len] (HetLoRA)
MERGE_MODE = "merge-mode"  # "keep" | "add" | "replace": the frozen merged term (FLoRA, FedEx)
POOLED_DATA = "pooled-data"  # centralized baseline: train on every partition's data
STEPS_SCALE = "steps-scale"  # centralized baseline: steps x this, the federation's budget
PROXIMAL_MU = "proximal-mu"  # FedProx: (mu / 2) * ||theta - theta_global||^2 in the loss
MERGE_RECORD = "merge"  # ArrayRecord beside "arrays" carrying the frozen-term payload
# Keys inside the merge record: "<lora layer>.<suffix>".
MERGE_A, MERGE_B, MERGE_DENSE = "merge_A", "merge_B", "merge_W"
SECAGG_KEYS = "secagg-keys"  # FitIns config: the adapter's key order (Parameters has none)
SECAGG_MAX_WEIGHT = 10_000.0  # SecAgg+ max_weight: above any client's example count

NPY_STYPE = "numpy.ndarray"  # Flower's SType.NUMPY
MAX_CLIENT_ID = 2**31 - 1
MAX_COUNT = 2**53  # largest integer a float metric holds exactly
MAX_TASK_NAME = 64
# An honest reply carries a few dozen metrics (about 20 per task at a generation round); a cap
# far above that bounds what one reply can write into every round's record and report.
MAX_METRICS = 1024
_TASK = re.compile(r"[a-z0-9][a-z0-9_-]*")
_METRIC = re.compile(r"[A-Za-z0-9][A-Za-z0-9@_.-]{0,63}")
# The header np.save writes for a numeric array; no object ('O') or structured dtype.
_NPY_MAGIC = b"\x93NUMPY\x01\x00"
_NPY_HEADER = re.compile(
    rb"\{'descr': '([<>|][fiucb]\d{1,2})', 'fortran_order': (False|True), "
    rb"'shape': \(((?:\d{1,10}, ?)*\d{0,10})\), \} *\n"
)
MAX_NDIM = 8

# Metric -> (lowest, highest) for the scalar metrics a reply may carry (all finite).
_RANGES: dict[str, tuple[float, float]] = {
    NUM_EXAMPLES: (0, MAX_COUNT),
    TASK_EXAMPLES: (0, MAX_COUNT),
    TRAIN_LOSS: (0, math.inf),
    TRAIN_LOSS_TASK: (0, math.inf),
    TRAIN_LOSS_FIRST: (0, math.inf),
    TRAIN_LOSS_LAST: (0, math.inf),
    TRAIN_SECONDS: (0, math.inf),
    TRAIN_STEPS: (0, MAX_COUNT),
    TRAIN_ON_GPU: (0, 1),
    PERSONAL_LOADED_ROUND: (-1, MAX_COUNT),
    SHARED_IN_FINGERPRINT: (0, MAX_COUNT),
    MERGE_ROUND: (-1, MAX_COUNT),
    EVAL_LOSS: (0, math.inf),
    EVAL_LOSS_TASK: (0, math.inf),
    EVAL_METRIC: (-math.inf, math.inf),  # report-only: finite is all that matters
    EVAL_SECONDS: (0, math.inf),
    DP_EPSILON: (0, math.inf),
    DP_DELTA: (0, 1),
    DP_EPSILON_SPENT: (0, math.inf),
    DP_DELTA_SPENT: (0, math.inf),
    DP_NOISE_STD: (0, math.inf),
}
_PREFIXES = (TASK_EXAMPLES, TRAIN_LOSS_TASK, EVAL_LOSS_TASK, EVAL_METRIC, EVAL_SECONDS)


class ReplyError(ValueError):
    """A client reply breaks the contract; the message is the reason the server logs."""


@dataclass(frozen=True)
class TrainReply:
    """A validated train reply: who sent it, its weight, its metrics and its decoded arrays."""

    node_id: int
    client_id: int
    num_examples: float
    task_examples: Mapping[str, float]  # task -> training examples; sums to num_examples
    metrics: Mapping[str, int | float]  # every metric, validated (known names only)
    arrays: Mapping[str, np.ndarray] = field(repr=False)  # read-only views of the payload


@dataclass(frozen=True)
class EvalReply:
    """A validated evaluate reply: who sent it, on how many examples, its losses per task."""

    node_id: int
    client_id: int
    num_examples: float
    eval_losses: Mapping[str, float]  # task -> validation loss
    metrics: Mapping[str, int | float]


def _rule(name: str) -> tuple[float, float] | None:
    """The range of metric ``name`` (a prefix rule for per-task names); None if unknown."""
    if name in _RANGES and name not in _PREFIXES:
        return _RANGES[name]
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return _RANGES[prefix] if _task_of(name, prefix) is not None else None
    return None


def metric_task(name: str) -> str | None:
    """The task a per-task metric names (``eval-loss.generation`` -> ``generation``); None
    for a run-level metric or a name the contract does not know."""
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return _task_of(name, prefix)
    return None


def _task_of(name: str, prefix: str) -> str | None:
    task = name.removeprefix(prefix)
    if prefix == EVAL_METRIC:  # "eval.<task>.<metric>"
        task, _, metric = task.partition(".")
        if not _METRIC.fullmatch(metric):
            return None
    ok = len(task) <= MAX_TASK_NAME and _TASK.fullmatch(task) is not None
    return task if ok else None


def _number(name: str, value: Any) -> int | float:
    """``value`` as a finite int or float in the range of metric ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReplyError(f"metric '{name}' must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ReplyError(f"metric '{name}' must be finite, got {value!r}")
    low, high = _rule(name) or (-math.inf, math.inf)
    if not low <= value <= high:
        raise ReplyError(f"metric '{name}' = {value!r} is outside [{low}, {high}]")
    return value


def parse_metrics(message: Message) -> dict[str, int | float]:
    """Every known metric of ``message``, validated; unknown names are left out."""
    if message.has_error():
        raise ReplyError(f"client error: {message.error.reason}")
    records = message.content.metric_records
    if "metrics" not in records:
        raise ReplyError("reply lacks 'metrics'")
    if len(records["metrics"]) > MAX_METRICS:
        raise ReplyError(
            f"reply carries {len(records['metrics'])} metrics; at most {MAX_METRICS} are accepted"
        )
    metrics = {}
    for name, value in records["metrics"].items():
        if not isinstance(name, str):
            raise ReplyError(f"metric name {name!r} is not a string")
        checked = _number(name, value)
        if _rule(name) is not None or name == CLIENT_ID:
            metrics[name] = checked
    return metrics


def _client_id(metrics: Mapping[str, Any]) -> int:
    value = metrics.get(CLIENT_ID)
    if value is None:
        raise ReplyError(f"metric '{CLIENT_ID}' is missing")
    if not isinstance(value, int) or not 0 <= value <= MAX_CLIENT_ID:
        raise ReplyError(f"metric '{CLIENT_ID}' must be an integer in [0, {MAX_CLIENT_ID}]")
    return value


def _count(metrics: Mapping[str, Any], *, positive: bool) -> float:
    value = metrics.get(NUM_EXAMPLES)
    if value is None:
        raise ReplyError(f"metric '{NUM_EXAMPLES}' is missing")
    if positive and not value > 0:
        raise ReplyError(f"metric '{NUM_EXAMPLES}' must be > 0, got {value!r}")
    return float(value)


def _per_task(metrics: Mapping[str, Any], prefix: str) -> dict[str, float]:
    return {
        name.removeprefix(prefix): float(v)
        for name, v in metrics.items()
        if name.startswith(prefix)
    }


def parse_train(message: Message) -> TrainReply:
    """Parse and validate a train reply; raises :class:`ReplyError` with the reason."""
    metrics = parse_metrics(message)
    num_examples = _count(metrics, positive=True)
    tasks = _per_task(metrics, TASK_EXAMPLES)
    if tasks and sum(tasks.values()) != num_examples:
        raise ReplyError(
            f"metric '{NUM_EXAMPLES}' = {num_examples!r} is not the sum of the per-task "
            f"counts ({sum(tasks.values())!r})"
        )
    if "arrays" not in message.content.array_records:
        raise ReplyError("reply lacks 'arrays'")
    return TrainReply(
        node_id=message.metadata.src_node_id,
        client_id=_client_id(metrics),
        num_examples=num_examples,
        task_examples=tasks,
        metrics=metrics,
        arrays=decode_record(message.content.array_records["arrays"]),
    )


def parse_evaluate(message: Message) -> EvalReply:
    """Parse and validate an evaluate reply; raises :class:`ReplyError` with the reason."""
    metrics = parse_metrics(message)
    num_examples = _count(metrics, positive=False)
    losses = _per_task(metrics, EVAL_LOSS_TASK)
    if losses and not num_examples > 0:
        raise ReplyError(f"eval losses on {num_examples!r} examples")
    return EvalReply(
        node_id=message.metadata.src_node_id,
        client_id=_client_id(metrics),
        num_examples=num_examples,
        eval_losses=losses,
        metrics=metrics,
    )


def decode_array(array: Array, key: str = "?") -> np.ndarray:
    """A read-only NumPy view of ``array``'s .npy payload, or :class:`ReplyError`.

    Only the header ``np.save`` writes for a C-ordered numeric array is accepted, its shape
    and dtype must agree with the ``Array``'s own fields, and the payload must hold exactly
    the bytes they imply. No ``np.load``: it parses headers with ``ast.literal_eval`` (slow
    at 420 tensors x 100 clients) and is a wider surface than this format needs. A reply's
    420 tensors share about a dozen distinct headers, so parsing one is cached
    (:func:`_parse_header`): decoding is then a few dict and tuple compares per tensor.
    """
    if not isinstance(array, Array) or getattr(array, "stype", None) != NPY_STYPE:
        raise ReplyError(
            f"array '{key}': unsupported serialisation {getattr(array, 'stype', None)!r}"
        )
    data = array.data
    if not isinstance(data, bytes) or data[:8] != _NPY_MAGIC or len(data) < 10:
        raise ReplyError(f"array '{key}': not a .npy v1.0 payload")
    end = 10 + int.from_bytes(data[8:10], "little")
    header = _parse_header(data[10:end])
    if isinstance(header, str):
        raise ReplyError(f"array '{key}': {header}")
    dtype, name, shape, count, order = header
    if shape != _declared_shape(array) or name != array.dtype:
        raise ReplyError(
            f"array '{key}': header says {name} {shape}, the Array says {array.dtype} "
            f"{array.shape!r}"
        )
    if len(data) - end != count * dtype.itemsize:
        raise ReplyError(
            f"array '{key}': payload is {len(data) - end} bytes, {shape} {name} needs "
            f"{count * dtype.itemsize}"
        )
    return np.frombuffer(data, dtype=dtype, count=count, offset=end).reshape(shape, order=order)


@functools.lru_cache(maxsize=256)
def _parse_header(header: bytes) -> tuple[np.dtype, str, tuple[int, ...], int, str] | str:
    """(dtype, its name, shape, element count, order) of a .npy v1.0 header, or why it is not
    one this format accepts. Pure in ``header``, so cached: headers repeat across tensors and
    clients, and a bad header is rejected the same way every time."""
    match = _NPY_HEADER.fullmatch(header)
    if match is None:
        return "unsupported .npy header (object or structured dtype?)"
    shape = tuple(int(d) for d in match[3].split(b",") if d.strip())
    try:
        dtype = np.dtype(match[1].decode())
    except TypeError:  # a descr such as '<f3' that fits the pattern but no real dtype
        return f"unknown dtype {match[1].decode()!r}"
    if len(shape) > MAX_NDIM:
        return f"header has {len(shape)} dimensions, at most {MAX_NDIM} are accepted"
    return dtype, str(dtype), shape, math.prod(shape), "F" if match[2] == b"True" else "C"


def _declared_shape(array: Array) -> tuple[int, ...] | None:
    """The ``Array``'s own shape field as a tuple of ints, or None if it is not one."""
    shape = array.shape
    ok = isinstance(shape, list | tuple) and all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    )
    return tuple(shape) if ok else None


def decode_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    """Every array of ``record`` through :func:`decode_array`."""
    out = {}
    for key, array in record.items():
        if not isinstance(key, str):
            raise ReplyError(f"array key {key!r} is not a string")
        out[key] = decode_array(array, key)
    return out


def weighted_mean(
    entries: Iterable[Mapping[str, Any]], key: str, task: str = "", *, task_counts: bool = True
) -> float:
    """Mean of ``entry[key]`` over the entries (reply metrics) that have it, weighted by the
    entry's ``num-examples.<task>`` (with ``task_counts``), else its ``num-examples``, else 1;
    NaN when the weights sum to 0. Summed in entry order, so the bits depend on the order the
    caller fixes."""
    task_key = TASK_EXAMPLES + task if task_counts else NUM_EXAMPLES
    pairs = [(e.get(task_key, e.get(NUM_EXAMPLES, 1)), e[key]) for e in entries if key in e]
    total = sum(w for w, _ in pairs)
    return sum(w * v for w, v in pairs) / total if total else math.nan


def task_means(
    entries: Iterable[Mapping[str, Any]], prefix: str, *, task_counts: bool = True
) -> dict[str, float]:
    """``{task: weighted_mean of <prefix><task>}`` for every task some entry reports (e.g.
    ``prefix = "eval-loss."``), sorted by task; tasks whose weights sum to 0 are left out.
    The one per-task mean of the round record and of CoBa's loss history."""
    entries = list(entries)
    tasks = sorted({k.removeprefix(prefix) for e in entries for k in e if k.startswith(prefix)})
    means = {t: weighted_mean(entries, prefix + t, t, task_counts=task_counts) for t in tasks}
    return {task: mean for task, mean in means.items() if not math.isnan(mean)}
