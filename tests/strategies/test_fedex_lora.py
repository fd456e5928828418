"""FedEx-LoRA: B_bar A_bar plus the merged residual is exactly sum_k p_k B_k A_k."""

import numpy as np

from colora.wire import to_numpy
from strategies.maths.lora_products import lora_pairs
from tests.strategies.fakes import FakeGrid, lora_state, metrics, strategy, train_round
from tests.strategies.lora_oracles import fedex_aggregate, product_average


def test_factor_mean_plus_residual_is_the_exact_average():
    rng = np.random.default_rng(0)
    updates = {n: lora_state(rng) for n in (1, 2, 3)}
    fedex = strategy("fedex-lora")

    def update(sent):
        node = sent.metadata.dst_node_id
        return updates[node], metrics(node, n=node, **{"merge-round": 0})

    sent, _, new = train_round(fedex, 1, lora_state(rng), FakeGrid(updates), update)
    assert all(m.content["config"]["merge-mode"] == "replace" for m in sent)
    new = to_numpy(new)
    for layer, (a_key, b_key) in lora_pairs(new).items():
        As, Bs = [updates[n][a_key] for n in (1, 2, 3)], [updates[n][b_key] for n in (1, 2, 3)]
        exact = product_average(As, Bs, [1, 2, 3])
        np.testing.assert_allclose(
            new[b_key] @ new[a_key] + fedex.term.total[layer], exact, atol=1e-6
        )
        _, _, residual = fedex_aggregate(As, Bs, [1, 2, 3])
        np.testing.assert_allclose(fedex.term.total[layer], residual, atol=1e-6)
    assert fedex.round_log(1)["merged_increment_rank"] == 4 * 3  # (K + 1) r
