"""FFA-LoRA: only B travels, A stays fixed, and averaging B is exact for the product."""

import numpy as np
from flwr.app import ConfigRecord

from colora.wire import to_numpy, to_record
from strategies.maths.lora_products import lora_pairs
from tests.strategies.fakes import FakeGrid, lora_state, metrics, sent_state, strategy, train_round
from tests.strategies.lora_oracles import product_average


def test_only_b_travels_and_the_product_average_is_exact():
    rng = np.random.default_rng(0)
    x0 = lora_state(rng)
    new_b = {n: {k: v for k, v in lora_state(rng).items() if "lora_B" in k} for n in (1, 2, 3)}
    ffa = strategy("ffa-lora")

    def update(sent):
        assert set(sent_state(sent)) == {k for k in x0 if "lora_B" in k}
        assert sent.content["config"]["train-factors"] == "B"
        node = sent.metadata.dst_node_id
        return new_b[node], metrics(node, n=node)

    _, _, new = train_round(ffa, 1, x0, FakeGrid(new_b), update)
    new = to_numpy(new)
    for layer, (a_key, b_key) in lora_pairs(x0).items():
        np.testing.assert_array_equal(new[a_key], x0[a_key])  # A never changes
        exact = product_average([x0[a_key]] * 3, [new_b[n][b_key] for n in (1, 2, 3)], [1, 2, 3])
        np.testing.assert_allclose(new[b_key] @ new[a_key], exact, atol=1e-6, err_msg=layer)

    evaluate = list(ffa.configure_evaluate(1, to_record(new), ConfigRecord(), FakeGrid([1, 2])))
    assert set(sent_state(evaluate[0])) == {k for k in x0 if "lora_B" in k}
