"""One client must not take over the aggregate (issue 14, section 2).

A reply claiming ``num-examples = 1e15`` with an update of all 7.0 once made every entry of the
fedavg aggregate 7.0. Screening now (1) rejects counts above what the configuration lets a
client load and (2) caps any client's share of the weight at ``strategy.max-client-share``.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from hypothesis import given, settings
from hypothesis import strategies as st

from colora import contract as names
from colora.wire import to_numpy
from server import run_dir as rundir
from server.weights import capped_weights
from tests.server.federation_fakes import TASKS, AnsweringGrid, assert_same_arrays, federate
from tests.strategies.fakes import lora_state

# Every strategy whose aggregate weights clients by their example counts.
EXAMPLE_WEIGHTED = [
    "fedavg",
    "fedprox",
    "fedadam",
    "fedyogi",
    "ffa-lora",
    "fedsa-lora",
    "flora",
    "fedex-lora",
    "similarity-weighted",
    "clustered",
    "coba",
]
HONEST = {1: 11, 3: 13}  # the other two clients' counts (federation_fakes: 10 + node)


def test_capped_weights_by_hand():
    # 1e15 against 10 + 10 at a 1/2 cap: c = 0.5 * 20 / (1 - 0.5) = 20, a share of exactly 1/2.
    np.testing.assert_array_equal(capped_weights([1e15, 10, 10], 0.5), [20, 10, 10])
    np.testing.assert_array_equal(capped_weights([3, 2, 1], 0.5), [3, 2, 1])  # within the cap
    np.testing.assert_array_equal(capped_weights([5, 1], 1.0), [5, 1])  # 1 = no cap
    # Two of four over a 0.3 cap: c = 0.3 * 2 / (1 - 0.6) = 1.5 each.
    np.testing.assert_allclose(capped_weights([100, 50, 1, 1], 0.3), [1.5, 1.5, 1, 1], rtol=1e-15)
    np.testing.assert_array_equal(capped_weights([9, 1, 1], 0.25), [1, 1, 1])  # unreachable
    np.testing.assert_array_equal(capped_weights([7.0], 0.5), [7.0])
    assert capped_weights([], 0.5).size == 0


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    st.lists(st.floats(1e-3, 1e15, allow_nan=False), min_size=2, max_size=12),
    st.floats(0.05, 1.0),
)
def test_capped_weights_bound_every_share_and_touch_only_the_largest(weights, share):
    capped = capped_weights(weights, share)
    w = np.asarray(weights)
    assert np.all(capped <= w) and np.all(capped > 0)
    if share * len(w) > 1:
        assert capped.max() / capped.sum() <= share * (1 + 1e-9)
        lowered = capped < w
        # Only the largest claims are lowered, all to one level, never below an untouched one.
        if lowered.any():
            assert np.ptp(capped[lowered]) <= 1e-9 * capped.max()
            assert capped[lowered].min() >= capped[~lowered].max(initial=0) * (1 - 1e-12)
    else:
        assert np.ptp(capped) == 0  # no cap can hold: equal weights


def _claiming(n: float):
    """Node 2 sends an update of all 7.0 and claims ``n`` examples of its task."""

    def reply(message: Message) -> Message:
        arrays = {
            k: Array(np.full(a.shape, 7.0, np.dtype(a.dtype)))
            for k, a in message.content["arrays"].items()
        }
        metrics = {
            names.CLIENT_ID: 1,
            names.NUM_EXAMPLES: n,
            names.TASK_EXAMPLES + TASKS[2]: n,
        }
        content = RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics)})
        return Message(content, reply_to=message)

    return reply


@pytest.mark.usefixtures("server_task_identity")
@pytest.mark.parametrize("strategy", EXAMPLE_WEIGHTED)
def test_a_client_claiming_1e15_examples_holds_at_most_the_capped_share(tmp_path, strategy):
    # No configured per-task limit, so only the share cap stands between 1e15 and the mean.
    common = {"strategy.name": strategy, "train.max-train-examples": 0, "num-server-rounds": 2}
    cap = 0.5 * sum(HONEST.values()) / (1 - 0.5)  # = 24: node 2 then holds exactly half
    greedy = federate(tmp_path, AnsweringGrid(train={2: _claiming(1e15)}), **common)
    capped = federate(tmp_path, AnsweringGrid(train={2: _claiming(cap)}), run_name="c", **common)
    assert_same_arrays(to_numpy(greedy.arrays), to_numpy(capped.arrays), strategy)
    lines = rundir.read_metrics(greedy.run_dir)
    used = [e[names.NUM_EXAMPLES] for e in lines[0]["train"] if e[names.CLIENT_ID] == 1]
    assert used == [cap]
    assert not all(np.all(v == 7.0) for v in to_numpy(greedy.arrays).values())


@pytest.mark.usefixtures("server_task_identity")
def test_fedavg_gives_the_greedy_client_exactly_half(tmp_path):
    result = federate(
        tmp_path, AnsweringGrid(train={2: _claiming(1e15)}), **{"train.max-train-examples": 0}
    )
    lines = rundir.read_metrics(result.run_dir)
    weights = {e[names.CLIENT_ID]: e[names.NUM_EXAMPLES] for e in lines[0]["train"]}
    assert weights == {0: 11, 1: 24.0, 2: 13}
    # Honest node k replies x0 + 0.01 k; with weights 11 : 24 : 13 node 2's 7.0 counts half.
    x0 = lora_state(np.random.default_rng(0))
    for key, value in to_numpy(result.arrays).items():
        expected = (11 * (x0[key] + 0.01) + 24 * 7.0 + 13 * (x0[key] + 0.03)) / 48
        np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.usefixtures("server_task_identity")
def test_counts_beyond_the_configured_limit_are_rejected(tmp_path):
    result = federate(tmp_path, AnsweringGrid(train={2: _claiming(65)}))  # limit 64 per task
    (line,) = rundir.read_metrics(result.run_dir)
    (rejection,) = line["rejected"]
    assert rejection["node_id"] == 2 and "train.max-train-examples = 64" in rejection["reason"]


def _evaluated_on(n: float, loss: float = 100.0):
    """Node 2's evaluate reply: ``n`` examples of its task at a loss of ``loss``."""

    def reply(message: Message) -> Message:
        metrics = {
            names.CLIENT_ID: 1,
            names.NUM_EXAMPLES: n,
            names.EVAL_LOSS: loss,
            names.EVAL_LOSS_TASK + TASKS[2]: loss,
        }
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=message)

    return reply


@pytest.mark.usefixtures("server_task_identity")
def test_an_evaluate_count_beyond_eval_examples_is_rejected(tmp_path):
    # CoBa weights each task's validation loss by these counts: 1e15 would own the history.
    grid = AnsweringGrid(evaluate={2: _evaluated_on(1e15)})
    result = federate(tmp_path, grid, **{"strategy.name": "coba", "train.eval-examples": 16})
    (line,) = rundir.read_metrics(result.run_dir)
    (rejection,) = line["rejected"]
    assert rejection["node_id"] == 2 and "train.eval-examples = 16" in rejection["reason"]
    assert TASKS[2] not in line["eval_loss_by_task"]


@pytest.mark.usefixtures("server_task_identity")
def test_evaluate_counts_are_capped_like_train_counts(tmp_path):
    # Honest nodes report 4 examples each; 16 is within train.eval-examples but would hold 2/3.
    grid = AnsweringGrid(evaluate={2: _evaluated_on(16)})
    result = federate(tmp_path, grid, **{"strategy.name": "coba", "train.eval-examples": 16})
    (line,) = rundir.read_metrics(result.run_dir)
    counts = {e[names.CLIENT_ID]: e[names.NUM_EXAMPLES] for e in line["eval"]}
    assert counts == {0: 4, 1: 8.0, 2: 4}  # capped at half: 8 / (4 + 8 + 4)
    assert not line["rejected"]


def test_clients_of_weight_zero_hold_no_share():
    # Evaluations on no examples: the lone client with data keeps its count (it is all there
    # is), and among several the cap applies to the positive ones only.
    assert capped_weights([0, 2, 0], 0.5).tolist() == [0, 2, 0]
    assert capped_weights([0, 30, 0, 10, 10], 0.5).tolist() == [0, 20, 0, 10, 10]


@pytest.mark.usefixtures("server_task_identity")
def test_replies_naming_a_task_outside_data_tasks_are_rejected(tmp_path):
    # Node 2 reports translation, which this run does not train: its counts, losses and
    # generation metrics would add a task to every report, and on evaluation raise the count
    # it may claim (the bound is train.eval-examples per task).
    tasks = ",".join(t for t in TASKS.values() if t != TASKS[2])
    result = federate(tmp_path, AnsweringGrid(), **{"data.tasks": tasks})
    (line,) = rundir.read_metrics(result.run_dir)
    assert [r["node_id"] for r in line["rejected"]] == [2, 2]  # its train and evaluate replies
    reason = f"names task {TASKS[2]!r}, not one of data.tasks (generation, summarization)"
    assert all(reason in r["reason"] for r in line["rejected"])
    assert TASKS[2] not in line["eval_loss_by_task"] and TASKS[2] not in line["train_loss_by_task"]
