"""FedSA-LoRA: only A travels and is averaged; B is private to every client."""

import numpy as np
from flwr.app import ConfigRecord

from colora.wire import to_numpy, to_record
from strategies.maths.averaging import weighted_average
from tests.strategies.fakes import FakeGrid, lora_state, metrics, sent_state, strategy, train_round


def test_only_a_travels_and_is_averaged_b_stays_private():
    rng = np.random.default_rng(0)
    x0 = lora_state(rng)
    a_keys = {k for k in x0 if "lora_A" in k}
    new_a = {n: {k: v for k, v in lora_state(rng).items() if k in a_keys} for n in (1, 2)}
    fedsa = strategy("fedsa-lora")

    def update(sent):
        assert set(sent_state(sent)) == a_keys
        assert sent.content["config"]["private-factors"] == "B"
        node = sent.metadata.dst_node_id
        return new_a[node], metrics(node, n=node)

    _, _, new = train_round(fedsa, 1, x0, FakeGrid(new_a), update)
    new = to_numpy(new)
    expected = weighted_average([new_a[1], new_a[2]], [1, 2])
    for key in x0:
        if key in a_keys:
            np.testing.assert_allclose(new[key], expected[key], rtol=1e-6)
        else:
            np.testing.assert_array_equal(new[key], x0[key])
    evaluate = list(fedsa.configure_evaluate(1, to_record(new), ConfigRecord(), FakeGrid([1, 2])))
    assert set(sent_state(evaluate[0])) == a_keys
    assert evaluate[0].content["config"]["private-factors"] == "B"
