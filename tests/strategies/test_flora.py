"""FLoRA: the merged term is exactly sum_k p_k B_k A_k, with heterogeneous ranks, and the
per-node merge protocol sends a dense term, an increment or nothing, as each node needs."""

import numpy as np
from flwr.app import ConfigRecord

from colora.keys import truncate_rank
from colora.wire import to_numpy, to_record
from strategies.maths.lora_products import lora_pairs
from tests.strategies.fakes import (
    LAYERS,
    FakeGrid,
    lora_state,
    metrics,
    reply,
    strategy,
    train_round,
)
from tests.strategies.lora_oracles import product_average


def _merge(message):
    config = message.content["config"]
    return config["merge-mode"], config["merge-round"], to_numpy(message.content["merge"])


def test_merged_term_is_exact_with_heterogeneous_ranks():
    rng = np.random.default_rng(0)
    x0 = lora_state(rng)
    ranks = {1: 3, 2: 1, 3: 2}
    updates = {n: truncate_rank(lora_state(rng), r) for n, r in ranks.items()}
    flora = strategy("flora", **{"client-ranks": "3,1,2"})

    def update(sent):
        node = sent.metadata.dst_node_id
        assert _merge(sent) == ("replace", 0, {})  # round 1: no term yet
        return updates[node], metrics(node, n=node, **{"merge-round": 0})

    _, _, new = train_round(flora, 1, x0, FakeGrid(ranks), update)
    for key, value in to_numpy(new).items():  # the next round starts from a fresh adapter
        np.testing.assert_array_equal(value, x0[key])
    for layer, (a_key, b_key) in lora_pairs(x0).items():
        exact = product_average(
            [updates[n][a_key] for n in ranks], [updates[n][b_key] for n in ranks], [1, 2, 3]
        )
        np.testing.assert_allclose(flora.term.total[layer], exact, atol=1e-6)
    assert flora.round_log(1) == {"merged_round": 1, "merged_increment_rank": 6}


def test_nodes_get_an_increment_then_nothing_and_a_restarted_server_sends_dense():
    rng = np.random.default_rng(1)
    x0 = lora_state(rng)
    flora, grid = strategy("flora"), FakeGrid([1, 2])
    train_round(flora, 1, x0, grid, lambda m: (lora_state(rng), metrics(1, **{"merge-round": 0})))
    evaluate = list(flora.configure_evaluate(1, to_record(x0), ConfigRecord(), grid))
    mode, merge_round, payload = _merge(evaluate[0])
    assert (mode, merge_round) == ("add", 1)
    layer = LAYERS[0]
    increment = payload[f"{layer}.merge_B"] @ payload[f"{layer}.merge_A"]
    np.testing.assert_allclose(increment, flora.term.total[layer], atol=1e-6)
    flora.aggregate_evaluate(1, [_eval_reply(m, 1) for m in evaluate])
    train = list(flora.configure_train(2, to_record(x0), ConfigRecord(), grid))
    assert [_merge(m)[:2] for m in train] == [("keep", 1), ("keep", 1)]
    assert all(not _merge(m)[2] for m in train)

    restarted = strategy("flora")
    restarted.load_state(flora.state_arrays())
    train = list(restarted.configure_train(2, to_record(x0), ConfigRecord(), grid))
    mode, merge_round, payload = _merge(train[0])
    assert (mode, merge_round) == ("replace", 1)
    np.testing.assert_allclose(payload[f"{layer}.merge_W"], flora.term.total[layer])


def _eval_reply(sent, held):
    return reply(sent, {}, metrics(sent.metadata.dst_node_id, **{"merge-round": held}))
