"""The server's merged term D (FLoRA, FedEx-LoRA): increments folded off the aggregation's path
are always complete when D is read, by hand."""

import numpy as np
from flwr.app import ConfigRecord

from colora.wire import to_numpy
from strategies.merged_term import MergedTerm

LAYER = "m.layers.0.q_proj"
FIRST = (np.array([[1.0], [2.0]], np.float32), np.array([[1.0, 0.0, 3.0]], np.float32))
SECOND = (
    np.array([[1.0, 0.0], [0.0, 1.0]], np.float32),
    np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], np.float32),
)
# D after the first increment: B A = [[1, 0, 3], [2, 0, 6]]; the second adds [[0, 1, 0], [1, 0, 0]].
AFTER_FIRST = np.array([[1, 0, 3], [2, 0, 6]], np.float32)
AFTER_BOTH = np.array([[1, 1, 3], [3, 0, 6]], np.float32)


def test_every_reader_sees_every_increment_added():
    term = MergedTerm()
    term.add(1, {LAYER: FIRST})
    np.testing.assert_array_equal(term.total[LAYER], AFTER_FIRST)
    term.release_increment()
    term.add(2, {LAYER: SECOND})  # read at once, before the fold had any time
    assert term.to_arrays()["merged-round"] == 2
    np.testing.assert_array_equal(term.to_arrays()[f"merged/{LAYER}"], AFTER_BOTH)
    config, record = term.payload(node_id=7, config=ConfigRecord())  # unknown node: dense
    assert config["merge-mode"] == "replace"
    np.testing.assert_array_equal(to_numpy(record)[f"{LAYER}.merge_W"], AFTER_BOTH)
    b, a = term.increment[LAYER]  # the factors up-to-date nodes get are untouched
    np.testing.assert_array_equal(b, SECOND[0])
    np.testing.assert_array_equal(a, SECOND[1])


def test_increments_added_back_to_back_accumulate_in_order():
    term = MergedTerm()
    term.add(1, {LAYER: FIRST})
    term.add(2, {LAYER: SECOND})  # no read in between: the second fold waits for the first
    np.testing.assert_array_equal(term.total[LAYER], AFTER_BOTH)


def test_load_replaces_a_term_whose_fold_is_under_way():
    saved = MergedTerm()
    saved.add(1, {LAYER: FIRST})
    state = saved.to_arrays()
    term = MergedTerm()
    term.add(1, {LAYER: SECOND})
    term.load(state)
    assert term.round == 1
    np.testing.assert_array_equal(term.total[LAYER], AFTER_FIRST)
    term.add(2, {LAYER: SECOND})
    np.testing.assert_array_equal(term.total[LAYER], AFTER_BOTH)
